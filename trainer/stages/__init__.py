"""One module per stage, each exposing `run(ctx: StageContext) -> dict` (the marker's summary)."""
