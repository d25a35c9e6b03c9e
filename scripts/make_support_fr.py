"""Build the embedded `support-fr` dataset: synthetic French customer-support chats.

Why this exists: the project must run end to end on machines with no dataset hub, so it
ships its own small domain dataset. The conversations imitate the support chat of an
online shop that also sells a subscription ("Opaline"): a system prompt, then one to three
user/assistant exchanges that end on the assistant.

Why it is built this way:

- Deterministic: only `random.Random(seed)` drives choices and every pool is an ordered
  list, so the same seed always writes byte-identical files. The committed files can then
  be checked against a fresh build (a stale asset fails a test).
- Held-out eval: each pool of user phrasings and each pool of slot values (first names,
  cities, products, promo codes...) is cut in two, the last quarter being reserved for
  the eval split. Eval perplexity then measures generalisation to unseen wordings and
  entities rather than recall of memorised strings. Assistant templates are shared: they
  are the behaviour the fine-tune is meant to learn.
- Standard library only, so the asset can be rebuilt before any dependency is installed.

Regenerate from the repository root:

    python scripts/make_support_fr.py --seed 0 --out trainer/assets/support-fr
"""

import argparse
import datetime as dt
import json
import random
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "trainer" / "assets" / "support-fr"
REGENERATE_COMMAND = "python scripts/make_support_fr.py --seed {seed} --train {n_train} --eval {n_eval}"
SPLITS = ("train", "eval")

T = TypeVar("T")


def split_pool(values: Sequence[T]) -> tuple[list[T], list[T]]:
    """Cut a pool into (train part, eval part): the last quarter (at least one item) goes to eval.

    Order-based rather than random so the partition is obvious when reading the lists below
    and never moves when another pool changes.
    """
    if len(values) < 2:
        raise ValueError(f"a pool needs at least 2 values to be split, got {list(values)!r}")
    k = max(1, (len(values) + 2) // 4)
    return list(values[:-k]), list(values[-k:])


# --------------------------------------------------------------------------------------
# Slot values. Every pool is partitioned by `split_pool`.
# --------------------------------------------------------------------------------------

# Many first names, so a fine-tune must copy the one the system prompt gives: with 18 it learnt
# the names themselves and greeted held-out customers by a training name (0% right).
FIRST_NAMES = [
    "Camille", "Julien", "Sophie", "Thomas", "Nathalie", "Karim", "Émilie", "Nicolas", "Claire", "Mehdi",
    "Aurélie", "Antoine", "Sandrine", "Hugo", "Laura", "Vincent", "Chloé", "Sébastien", "Léa", "Lucas",
    "Manon", "Mathieu", "Pauline", "Romain", "Élodie", "Alexandre", "Céline", "Maxime", "Julie", "Guillaume",
    "Marine", "Kevin", "Audrey", "Damien", "Mélanie", "Florian", "Charlotte", "Jérémy", "Anaïs", "Quentin",
    "Lucie", "Benoît", "Margaux", "Adrien", "Océane", "Fabrice", "Clémence", "Cédric", "Justine", "Jérôme",
    "Amandine", "Arnaud", "Élise", "Franck", "Mathilde", "Grégoire", "Hélène", "Isabelle", "Pierre", "Valérie",
    "Yann", "Agathe", "Rémi", "Victoire", "Samuel", "Zoé", "Gabriel", "Léonie", "Raphaël", "Jade",
    "Louis", "Alice", "Arthur", "Rose", "Jules", "Louise", "Paul", "Anna", "Nathan", "Lina",
    "Théo", "Malik", "Fatima", "Rachid", "Leïla", "Sofiane", "Nadia", "Moussa", "Aïcha", "Yanis",
    "Salomé", "Tristan", "Coralie", "Bastien", "Ophélie", "Loïc", "Estelle", "Noémie", "Fabien", "Delphine",
    "Stéphane", "Virginie", "Patrick", "Christelle", "Frédéric", "Aude", "Hervé", "Brigitte", "Agnès",
    # eval
    "Inès", "Baptiste", "Yasmine", "Gaëlle", "Olivier", "Maëlys", "Corentin", "Solène", "Anthony", "Marion",
    "Thibault", "Axelle", "Dylan", "Morgane", "Cyril", "Bérénice", "Mathis", "Capucine", "Ludovic", "Apolline",
    "Hakim", "Samia", "Xavier", "Églantine", "Félix", "Héloïse", "Joël", "Kylian", "Marius", "Romane",
    "Eliott", "Ibrahim", "Gwenaëlle", "Timothée", "Albane", "Wassim", "Perrine",
]  # fmt: skip

LAST_NAMES = [
    "Martin", "Bernard", "Dubois", "Moreau", "Laurent", "Lefèvre", "Roux", "Fournier", "Girard", "Bonnet",
    "Mercier", "Blanc", "Guérin", "Faure", "Chevalier", "Petit", "Durand", "Leroy", "Simon", "Michel",
    "Garcia", "David", "Bertrand", "Robert", "Richard", "Rousseau", "Vincent", "Muller", "Fontaine", "Lambert",
    "Henry", "Gauthier", "Morel", "Masson", "Marchal", "Dumont", "Duval", "Denis", "Brun", "Picard",
    "Renaud", "Caron", "Gaillard", "Barbier", "Arnaud", "Schmitt", "Colin", "Vidal", "Hamon", "Boyer",
    # eval
    "Benali", "Nguyen", "Perrin", "Marchand", "Lemoine", "Tessier", "Royer", "Leclerc", "Huet", "Pelletier",
    "Cordier", "Aubert", "Besnard", "Kowalski", "Ouattara", "Jacquet", "Da Silva",
]  # fmt: skip

# (city, postcode)
CITIES = [
    ("Paris", "75011"), ("Lyon", "69003"), ("Marseille", "13006"), ("Toulouse", "31000"),
    ("Bordeaux", "33000"), ("Lille", "59000"), ("Nantes", "44000"), ("Strasbourg", "67000"),
    ("Montpellier", "34000"), ("Rennes", "35000"), ("Grenoble", "38000"), ("Dijon", "21000"),
    ("Angers", "49000"), ("Clermont-Ferrand", "63000"), ("Rouen", "76000"),
    # eval
    ("Brest", "29200"), ("Limoges", "87000"), ("Perpignan", "66000"), ("Besançon", "25000"),
    ("Poitiers", "86000"),
]  # fmt: skip

STREETS = [
    "rue des Lilas", "avenue Victor-Hugo", "boulevard Voltaire", "rue de la République",
    "rue Pasteur", "impasse des Tilleuls", "allée des Cerisiers", "rue du Moulin",
    "place du Marché", "chemin des Vignes", "rue Jean-Jaurès", "avenue de la Gare",
    # eval
    "rue des Peupliers", "boulevard Gambetta", "rue Émile-Zola", "allée des Marronniers",
]  # fmt: skip

# (name, grammatical gender, price in cents, category). Every product is an appliance, so
# templates may say "l'appareil" whatever the product. The category lets the agent suggest
# a comparable alternative; each split holds at least two products of every category it uses.
PRODUCTS = [
    ("casque audio sans fil Nova", "m", 8990, "high-tech"),
    ("bouilloire électrique Vapeo", "f", 3990, "cuisine"),
    ("aspirateur balai Cyclone 300", "m", 22900, "entretien"),
    ("lampe de bureau Halo", "f", 4550, "confort"),
    ("enceinte Bluetooth Rumba", "f", 5999, "high-tech"),
    ("machine à café Espressa", "f", 14900, "cuisine"),
    ("grille-pain Toasty", "m", 3490, "cuisine"),
    ("blender Mixo Pro", "m", 7900, "cuisine"),
    ("brosse à dents électrique Sonix", "f", 4990, "soin"),
    ("sèche-cheveux Aéra", "m", 6490, "soin"),
    ("montre connectée Pulse 2", "f", 12900, "high-tech"),
    ("tablette Lumo 10", "f", 24900, "high-tech"),
    ("clavier sans fil Keyo", "m", 5490, "high-tech"),
    ("purificateur d'air Brisa", "m", 18900, "confort"),
    ("robot aspirateur Roomo", "m", 29900, "entretien"),
    ("humidificateur Brume", "m", 4200, "confort"),
    ("ventilateur colonne Zéphyr", "m", 6990, "confort"),
    ("radiateur d'appoint Tiédo", "m", 8900, "confort"),
    # eval
    ("liseuse Papyra", "f", 11900, "high-tech"),
    ("friteuse sans huile Crousti", "f", 9990, "cuisine"),
    ("mixeur plongeant Turbo", "m", 3490, "cuisine"),
    ("webcam Visio HD", "f", 5900, "high-tech"),
    ("cafetière filtre Arôma", "f", 4490, "cuisine"),
    ("souris ergonomique Ergal", "f", 3990, "high-tech"),
]

CARRIERS = [
    "Colissimo", "Chronopost", "DPD", "Mondial Relay", "GLS", "UPS",
    # eval
    "Relais Colis", "DHL Express",
]  # fmt: skip

# The discount percentage is the code's trailing number.
PROMO_CODES = [
    "BIENVENUE10", "PRINTEMPS15", "FIDELITE20", "SOLDES25", "RENTREE10", "OPALINE5",
    "VIP30", "FLASH12", "WEEKEND15", "ETE20", "MERCI10", "PARRAIN15",
    # eval
    "AUTOMNE20", "HIVER15", "CADEAU10", "DUO25",
]  # fmt: skip

# (plan name, monthly price in cents)
PLANS = [
    ("Opaline Essentiel", 499),
    ("Opaline Confort", 799),
    ("Opaline Premium", 999),
    ("Opaline Famille", 1499),
    ("Opaline Découverte", 299),
    ("Opaline Sérénité", 1199),
    # eval
    ("Opaline Privilège", 1299),
    ("Opaline Intégral", 1999),
]

# Written to follow "votre"; "ma"/"mon" is chosen from the first word.
PAYMENT_METHODS = [
    "carte Visa", "carte Mastercard", "compte PayPal", "carte Visa Premier",
    # eval
    "carte American Express", "carte Maestro",
]  # fmt: skip

EMAIL_DOMAINS = ["gmail.com", "orange.fr", "free.fr", "laposte.net", "outlook.fr", "yahoo.fr"]

SLOT_POOLS: dict[str, list[Any]] = {
    "first_name": FIRST_NAMES,
    "last_name": LAST_NAMES,
    "city": CITIES,
    "street": STREETS,
    "product": PRODUCTS,
    "carrier": CARRIERS,
    "promo": PROMO_CODES,
    "plan": PLANS,
    "payment_method": PAYMENT_METHODS,
}


def _slot_text(value: Any) -> str:
    """The text a slot value shows in a conversation (tuples carry extra data after it)."""
    return value[0] if isinstance(value, tuple) else value


# Half the train conversations name a customer by an invented first name, seen once or twice in
# the whole split: a fine-tune can then only greet them by copying the name from the system prompt,
# the skill a held-out customer needs. With real names alone (a hundred, each in about twenty
# conversations) it learnt each name as a word and wrote half-names for held-out customers.
INVENTED_NAME_SHARE = 0.5
INVENTED_NAMES = 1500
NAME_VOWELS = "aeiouyàâäéèêëîïôöûüœ"


def invent_first_names(names: Sequence[str], avoid: Sequence[str], count: int) -> list[str]:
    """`count` first names made of the head of one listed name and the tail of another, cut
    where a vowel meets a consonant (« So » + « thalie »), none equal to a listed name or
    containing a value of `avoid`."""

    def cuts(name: str) -> list[int]:
        lower = name.lower()
        return [i for i in range(1, len(name)) if lower[i - 1] in NAME_VOWELS and lower[i] not in NAME_VOWELS]

    rng = random.Random(0)
    taken = set(names)
    invented: list[str] = []
    while len(invented) < count:
        head, tail = rng.sample(names, 2)
        head_cuts, tail_cuts = cuts(head), cuts(tail)
        if not head_cuts or not tail_cuts:
            continue
        name = head[: rng.choice(head_cuts)] + tail[rng.choice(tail_cuts) :]
        if len(name) < 4 or name in taken or any(value in name or name in value for value in avoid):
            continue
        taken.add(name)
        invented.append(name)
    return invented


# --------------------------------------------------------------------------------------
# Shared dialogue pieces.
# --------------------------------------------------------------------------------------

SYSTEM_PROMPTS = [
    "Vous êtes l'assistant du service client d'Opaline, une boutique en ligne d'appareils pour la maison "
    "et d'équipements high-tech. Répondez en français, avec courtoisie, en vouvoyant le client. "
    "Soyez précis et concret.",
    "Rôle : conseiller du service client Opaline (vente en ligne et abonnements). Consignes : vouvoyez "
    "le client, répondez de façon claire et concise, donnez les informations utiles (numéros de commande, "
    "dates, montants) et proposez toujours une solution.",
    "Vous représentez le support client d'Opaline. Vous aidez les clients pour leurs commandes, livraisons, "
    "retours, remboursements, paiements et abonnements. Restez poli, factuel et bienveillant.",
    "Vous êtes l'agent de support d'Opaline, boutique en ligne française. Répondez en français soutenu mais "
    "chaleureux, en quelques phrases. Appuyez-vous sur les informations du dossier client et n'inventez "
    "pas de politique commerciale.",
    "Assistant du service après-vente Opaline. Objectif : résoudre la demande du client dès le premier "
    "échange, avec des étapes simples et des informations vérifiables. Ton : professionnel, empathique, "
    "vouvoiement.",
]

# Appended to the system prompt when the customer is identified: lets answers use the name.
CUSTOMER_CONTEXTS = [
    "Client connecté : {first_name} {last_name} ({email}), {city}.",
    "Dossier client : {first_name} {last_name} - {city} - {email}.",
    "Vous échangez avec {first_name} {last_name} (compte {email}).",
]

GREETINGS_NAMED = [
    "Bonjour {first_name} !",
    "Bonjour {first_name}, merci pour votre message.",
    "Bonjour {first_name}, merci d'avoir contacté le service client Opaline.",
    "Bonjour {first_name}, merci de nous avoir écrit.",
]
GREETINGS_PLAIN = [
    "Bonjour !",
    "Bonjour, merci pour votre message.",
    "Bonjour et merci d'avoir contacté le service client Opaline.",
    "Bonjour, merci de nous avoir écrit.",
]

# Every first agent turn names the request right after the greeting, in one sentence that is the
# same for every intent but for the request's words (« Je m'occupe de votre facture. »); the answer,
# or the request for the order number or e-mail, follows it. The request is then decided at one
# token after a fixed prefix, where the base can copy the customer's own word from the opening,
# and what follows continues words just written. Why: with an acknowledgement of its own per intent,
# and only before asking for an identifier, greedy first replies of the default fine-tune collapsed
# onto a few acknowledgements (« Je peux vous préparer une étiquette de retour. » in 32 of 96) and
# named the right request in 25 of 96 held-out first turns. With this sentence (AMD EPYC Zen 4, bf16,
# seed 42, data, train and merge of the default recipe, 2026-12-07): 42 of 96, 36 of the 50 whose
# opening holds the request's word and 6 of the 46 that paraphrase it; task score 0.640 against
# 0.594, on checks that also fail a reply naming another request (scripts/make_support_tasks.py).
REQUESTS: dict[str, str] = {
    "order_tracking": "suivi de commande",
    "late_delivery": "livraison en retard",
    "refund": "remboursement",
    "return_label": "étiquette de retour",
    "damaged_item": "article endommagé",
    "password_reset": "mot de passe",
    "invoice_copy": "facture",
    "subscription_cancellation": "résiliation d'abonnement",
    "address_change": "changement d'adresse",
    "failed_payment": "paiement refusé",
    "promo_code": "code promo",
    "warranty": "demande de garantie",
    "product_availability": "question de disponibilité",
    "account_deletion": "suppression de compte",
    "delivery_options": "choix de livraison",
    "order_cancellation": "annulation de commande",
}
ACKNOWLEDGEMENTS: dict[str, tuple[str, ...]] = {
    name: (f"Je m'occupe de votre {request}.", f"Je m'occupe de votre {request} tout de suite.")
    for name, request in REQUESTS.items()
}

# After the customer gives the identifier, the answer opens by restating the request in the words
# of the acknowledgement. Without it the answer had to reach back to the acknowledgement for the
# intent, and a fine-tune of the tiny base mostly did not: with the acknowledgement in context its
# answers named the acknowledged intent for 32 of 80 train conversations and 25 of 80 held-out ones,
# falling back on the most frequent answers instead. The recap is a copy, which the base does well,
# and the answer then follows the words just written. With recaps of their own wording instead of
# the acknowledgement's (seed 42, 2026-12-07) the answers after the identifier took the right action
# in 21 of 42 against 37.
RECAPS: dict[str, str] = {name: f"Merci. Voici pour votre {request}." for name, request in REQUESTS.items()}

ASK_ORDER = [
    "Je vais vérifier cela pour vous. Pourriez-vous m'indiquer votre numéro de commande ? Il commence "
    "par CMD- et figure dans l'e-mail de confirmation.",
    "Pour retrouver votre commande, j'ai besoin de son numéro (format CMD- suivi de six chiffres). Vous le "
    "trouverez dans votre espace client, rubrique « Mes commandes ».",
    "Pouvez-vous me communiquer le numéro de la commande concernée ? Il se présente sous la forme CMD-XXXXXX.",
]
ASK_EMAIL = [
    "Pouvez-vous m'indiquer l'adresse e-mail utilisée pour créer votre compte ?",
    "Avant toute chose, quelle est l'adresse e-mail de votre compte Opaline ?",
    "Pour retrouver votre compte, pourriez-vous me donner l'adresse e-mail avec laquelle vous vous "
    "connectez ?",
]
# When the customer is identified, the agent already sees the address: it asks to confirm it.
ASK_EMAIL_CONFIRM = [
    "Pour des raisons de sécurité, pourriez-vous me confirmer l'adresse e-mail associée à votre compte ?",
    "Par mesure de sécurité, pouvez-vous me confirmer l'adresse e-mail de votre compte ?",
]

GIVE_ORDER = [
    "C'est la commande {order}.",
    "Voici le numéro : {order}",
    "Oui bien sûr, il s'agit de {order}.",
    "{order}",
    "Il s'agit de la commande {order}, passée le {order_date}.",
    "Je l'ai retrouvé : {order}.",
    # eval
    "Alors, c'est {order}.",
    "D'accord, mon numéro de commande est le {order}.",
]
GIVE_EMAIL = [
    "C'est {email}.",
    "Mon adresse est {email}",
    "{email}",
    "J'utilise {email} pour mon compte.",
    # eval
    "L'adresse du compte est {email}.",
    "Il s'agit de {email}, merci.",
]

THANKS = [
    "Merci beaucoup !",
    "D'accord, merci pour votre aide.",
    "Très bien, merci pour ces informations.",
    "C'est noté, merci.",
    "Super, merci pour votre réponse rapide.",
    "D'accord, c'est très clair. Merci !",
    "Merci, bonne journée à vous.",
    "Ok, je vous remercie pour votre aide.",
    "Parfait, merci beaucoup.",
    # eval
    "Entendu, je vous remercie.",
    "Merci à vous, bonne fin de journée.",
    "Compris, merci infiniment pour votre aide.",
]
CLOSINGS_NAMED = [
    "Avec plaisir, {first_name} ! N'hésitez pas à revenir vers nous si vous avez d'autres questions. "
    "Bonne journée !",
    "Je vous en prie, {first_name}. Belle journée à vous !",
    "C'était un plaisir de vous aider, {first_name}. À bientôt sur Opaline !",
]
CLOSINGS_PLAIN = [
    "Avec plaisir ! N'hésitez pas à nous recontacter si besoin. Bonne journée !",
    "Je vous en prie. Excellente journée à vous !",
    "Merci à vous pour votre patience. À bientôt sur Opaline !",
]


# Openings that share one frame across every intent, the request told only by its topic's words (12
# frames x 8 topics per intent), for 70% of train conversations; the other 30% keep the
# whole-sentence openings. Why: with those alone (12 per intent, each seen a dozen times) a
# fine-tune read a request by its template. Measured side by side (AMD EPYC Zen 4, 2026-12-07, data,
# train and merge of the default recipe, merged on the 138 task rows): 0.594, 0.523 and 0.529 at
# train.seed 42, 1 and 2 against 0.521, 0.490 and 0.518 with whole-sentence openings only, 98-100%
# of replies self-ended against 93-96%; at a 35% share 0.552, at 100% 0.536 (one seed each). It did
# not teach the model to read held-out requests: the right action on a first turn stays at 6-9 of 54
# (docs/BENCHMARKS.md). Train only: the eval split keeps its whole-sentence phrasings. No frame puts
# « de » or « à » before the topic, so no article needs contracting.
FRAMED_OPENING_SHARE = 0.7
FRAMES = [
    "Bonjour, j'ai une question concernant {topic}.",
    "Bonjour, je vous contacte pour {topic}.",
    "Bonsoir, j'aurais besoin d'aide pour {topic}.",
    "Bonjour, pouvez-vous m'aider ? C'est concernant {topic}.",
    "Bonjour, une petite question sur {topic}, s'il vous plaît.",
    "Bonjour, je vous écris concernant {topic}. Merci d'avance pour votre aide.",
    "Bonsoir, j'ai un souci concernant {topic}.",
    "Bonjour, quelqu'un peut-il m'aider pour {topic} ?",
    "Bonjour, je reviens vers vous pour {topic}.",
    "Bonjour, objet de ma demande : {topic}.",
    "Bonjour, merci de me répondre rapidement concernant {topic}.",
    "Bonsoir, je vous sollicite pour {topic}.",
]
# Noun phrases in each intent's own words; where the intent needs an identifier, some carry it.
TOPICS: dict[str, list[str]] = {
    "order_tracking": [
        "le suivi de ma commande {order}", "le suivi de mon colis", "l'expédition de ma commande {order}",
        "le numéro de suivi de {mon_product}", "l'état d'avancement de ma commande",
        "le statut de la commande {order}", "la date d'expédition de ma commande", "le lien de suivi du colis",
    ],
    "late_delivery": [
        "le retard de ma commande {order}", "ma livraison en retard", "un colis toujours pas arrivé",
        "la commande {order}, qui n'est toujours pas livrée", "le retard de livraison de {mon_product}",
        "une livraison qui a dépassé la date prévue", "la commande {order} en retard depuis {days_late} jours",
        "mon colis qui n'arrive pas",
    ],
    "refund": [
        "le remboursement de ma commande {order}", "mon remboursement", "un remboursement qui n'arrive pas",
        "le remboursement de {mon_product} renvoyé", "l'argent de la commande {order}, toujours pas remboursé",
        "le délai de remboursement de mon retour", "un remboursement sur ma carte",
        "le remboursement de mon retour, commande {order}",
    ],
    "return_label": [
        "une étiquette de retour pour la commande {order}", "le retour de {mon_product}",
        "une étiquette retour", "le renvoi d'un article", "l'étiquette de retour de la commande {order}",
        "un bon de retour prépayé", "le retour d'un article de la commande {order}",
        "la procédure de retour",
    ],
    "damaged_item": [
        "un article arrivé endommagé", "des dégâts sur {mon_product} à la réception", "un colis arrivé cassé, commande {order}",
        "un produit endommagé pendant la livraison", "la commande {order}, arrivée abîmée",
        "un article cassé à la réception", "{mon_product}, en mauvais état à l'arrivée",
        "un appareil livré avec l'écran fissuré, commande {order}",
    ],
    "password_reset": [
        "mon mot de passe oublié", "la réinitialisation du mot de passe du compte {email}",
        "un mot de passe perdu", "le mot de passe de mon compte {email}", "un nouveau mot de passe",
        "le lien de réinitialisation du mot de passe", "mon compte bloqué, mot de passe refusé",
        "la connexion à mon compte {email}, mot de passe incorrect",
    ],
    "invoice_copy": [
        "la facture de ma commande {order}", "une copie de facture", "la facture de {mon_product}",
        "un duplicata de la facture de la commande {order}", "ma facture introuvable",
        "une facture pour ma comptabilité", "la facture de la commande {order} en PDF",
        "l'envoi de ma facture",
    ],
    "subscription_cancellation": [
        "la résiliation de mon abonnement", "l'arrêt de mon abonnement {plan}",
        "la résiliation de l'abonnement du compte {email}", "mon abonnement à résilier",
        "la fin de mon abonnement et des prélèvements", "l'abonnement {plan} du compte {email}, à arrêter",
        "le désabonnement de mon compte", "la résiliation de l'abonnement lié à {email}",
    ],
    "address_change": [
        "un changement d'adresse de livraison pour la commande {order}", "l'adresse de livraison de ma commande",
        "une erreur dans mon adresse de livraison", "la modification de l'adresse de la commande {order}",
        "mon adresse de livraison à corriger", "une nouvelle adresse pour la commande {order}",
        "un déménagement et l'adresse de livraison", "l'adresse de livraison, commande {order}",
    ],
    "failed_payment": [
        "un paiement refusé", "mon paiement qui ne passe pas", "un échec de paiement par {payment_method}",
        "le paiement de mon panier", "une erreur au moment du paiement", "un paiement bloqué",
        "un refus de paiement avec {mon_payment_method}", "le paiement de ma commande, qui échoue",
    ],
    "promo_code": [
        "un code promo", "le code {promo}, qui ne fonctionne pas", "un code de réduction refusé",
        "le code promo {promo}", "une réduction qui ne s'applique pas", "un code promo expiré",
        "le code {promo} refusé dans mon panier", "l'utilisation d'un code de réduction",
    ],
    "warranty": [
        "la garantie de {mon_product}", "une panne sous garantie", "la garantie de la commande {order}",
        "{mon_product} en panne, toujours sous garantie ?", "une réparation sous garantie",
        "la durée de la garantie", "une prise en charge sous garantie, commande {order}",
        "la garantie d'un appareil qui ne marche plus",
    ],
    "product_availability": [
        "la disponibilité de {le_product}", "{le_product}, en rupture de stock", "un article indisponible",
        "le réassort de {le_product}", "un produit en rupture", "le retour en stock de {le_product}",
        "la date de disponibilité d'un article", "un article épuisé sur le site",
    ],
    "account_deletion": [
        "la suppression de mon compte", "la suppression du compte {email}", "l'effacement de mes données",
        "la fermeture définitive de mon compte", "la suppression de mes données personnelles",
        "mon compte {email}, à supprimer", "la clôture du compte {email} et de mes données",
        "la suppression de mon compte client",
    ],
    "delivery_options": [
        "les modes de livraison", "la livraison express", "la livraison en point relais",
        "les options de livraison pour {le_product}", "les délais et les tarifs de livraison",
        "une livraison rapide", "le choix entre point relais et domicile", "les frais de livraison",
    ],
    "order_cancellation": [
        "l'annulation de ma commande {order}", "une commande à annuler", "l'annulation de ma commande",
        "la commande {order}, que je veux annuler", "l'annulation d'un achat récent",
        "une commande passée par erreur", "l'annulation de la commande {order} avant son envoi",
        "ma commande à annuler au plus vite",
    ],
}  # fmt: skip


# --------------------------------------------------------------------------------------
# Intents.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowUp:
    """A follow-up question (several user phrasings, partitioned) and its possible answers."""

    users: tuple[str, ...]
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Intent:
    """One support topic.

    `need` names the identifier the agent must have before answering ("order", "email" or
    None). An opening phrasing that does not contain that slot makes the agent ask for it
    first, so conversations naturally run over several exchanges.
    """

    name: str
    need: str | None
    openings: tuple[str, ...]
    answers: tuple[str, ...]
    followups: tuple[FollowUp, ...]
    ask: tuple[str, ...] = ()
    give: tuple[str, ...] = ()


INTENTS: tuple[Intent, ...] = (
    Intent(
        name="order_tracking",
        need="order",
        openings=(
            "Bonjour, je voudrais savoir où en est ma commande {order}.",
            "Bonjour, pouvez-vous me dire quand ma commande {order} sera livrée ?",
            "Bonjour, j'ai commandé {un_product} le {order_date} et je n'ai pas encore de nouvelles. "
            "Où en est ma commande ?",
            "Bonjour, est-ce que ma commande {order} a déjà été expédiée ?",
            "Je n'arrive pas à suivre mon colis, pouvez-vous m'aider ?",
            "Bonsoir, j'aimerais connaître le statut de ma commande {order}, s'il vous plaît.",
            "Bonjour, j'ai passé commande le {order_date} et je n'ai toujours pas de numéro de suivi. "
            "Pouvez-vous me le transmettre ?",
            "Le colis de la commande {order} est-il déjà parti de votre entrepôt ?",
            "Bonjour, pourriez-vous me dire à quelle étape en est l'envoi de {mon_product} ? J'aimerais "
            "connaître la date de livraison.",
            "Bonjour, j'aimerais avoir le lien de suivi de la commande {order}, je ne le trouve pas dans mes "
            "e-mails.",
            "Bonsoir, mon colis est-il en route ? J'ai commandé {un_product} il y a quelques jours.",
            "Bonjour, pouvez-vous me dire quel transporteur s'occupe de la commande {order} et quand je peux "
            "l'attendre ?",
            # eval
            "Bonjour, avez-vous une idée de la date d'arrivée du paquet de la commande {order} ? Je "
            "souhaiterais m'organiser pour être là.",
            "Je n'ai aucune visibilité sur l'acheminement de {mon_product} depuis la confirmation d'achat, "
            "pouvez-vous me renseigner ?",
            "Bonjour, où se trouve actuellement mon colis ? Je n'ai reçu aucun e-mail d'expédition.",
            "Pourriez-vous me donner des nouvelles de la commande {order} ? Je l'attends avec impatience.",
        ),
        answers=(
            "Votre commande {order} ({product}) a été expédiée le {ship_date} avec {carrier}. Le numéro de "
            "suivi est {tracking} et la livraison est prévue le {eta}.",
            "J'ai bien retrouvé votre commande {order}. Elle a quitté notre entrepôt le {ship_date} et elle "
            "est en cours d'acheminement chez {carrier}. Vous pouvez suivre le colis avec le numéro "
            "{tracking} ; la livraison est estimée au {eta}.",
            "Bonne nouvelle : votre colis est en route ! Voici les informations de suivi de la commande "
            "{order} :\n- transporteur : {carrier}\n- numéro de suivi : {tracking}\n"
            "- livraison prévue : {eta}",
            "La commande {order} est en cours de préparation dans notre entrepôt et sera remise à {carrier} "
            "le {ship_date}. Vous recevrez alors un e-mail avec le numéro de suivi {tracking}, pour une "
            "livraison estimée au {eta}.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Et si je ne suis pas chez moi le jour de la livraison ?",
                    "Que se passe-t-il si personne n'est là au moment du passage du livreur ?",
                    "Je travaille toute la journée, comment faire si personne ne peut réceptionner le colis ?",
                ),
                answers=(
                    "En cas d'absence, {carrier} laisse un avis de passage et le colis est mis à disposition "
                    "dans le point de retrait le plus proche pendant 10 jours ouvrés. Vous pouvez aussi "
                    "reprogrammer la livraison depuis la page de suivi du numéro {tracking}.",
                    "Pas d'inquiétude : le livreur laissera un avis de passage et le colis vous attendra au "
                    "point de retrait le plus proche pendant 10 jours. Depuis la page de suivi, vous pouvez "
                    "également choisir une autre date de livraison.",
                ),
            ),
            FollowUp(
                users=(
                    "Le numéro de suivi ne fonctionne pas sur le site du transporteur, c'est normal ?",
                    "J'ai essayé le numéro de suivi mais le site indique qu'il est inconnu. Pourquoi ?",
                    "Le lien de suivi n'affiche aucune information, y a-t-il un problème ?",
                ),
                answers=(
                    "C'est normal : le suivi devient actif quelques heures après la prise en charge du colis "
                    "par {carrier}. Je vous invite à réessayer demain ; si le numéro {tracking} reste inconnu "
                    "après 48 heures, revenez vers nous et nous ouvrirons une enquête.",
                    "Les informations de suivi peuvent mettre jusqu'à 24 heures à apparaître sur le site de "
                    "{carrier}. Si rien ne s'affiche d'ici le {eta}, contactez-nous et nous lancerons une "
                    "réclamation auprès du transporteur.",
                ),
            ),
        ),
    ),
    Intent(
        name="late_delivery",
        need="order",
        openings=(
            "Bonjour, ma commande {order} devait arriver le {eta} et je ne l'ai toujours pas reçue.",
            "Bonjour, mon colis a plus de {days_late} jours de retard, que se passe-t-il ?",
            "Ma commande {order} aurait dû être livrée depuis plusieurs jours. Pouvez-vous vérifier ce qui "
            "se passe ?",
            "J'attends toujours ma commande du {order_date} ({product}), la date de livraison prévue est "
            "dépassée.",
            "Le suivi de la commande {order} n'a pas bougé depuis une semaine, c'est inquiétant.",
            "Bonjour, c'est très décevant : ma livraison est en retard et je n'ai reçu aucune information.",
            "Bonjour, la livraison de la commande {order} était annoncée pour le {eta}, cette date est "
            "passée et toujours rien.",
            "Bonjour, cela fait maintenant {days_late} jours que j'attends mon colis après la date promise. "
            "C'est normal ?",
            "Je commence à m'impatienter : la livraison de {mon_product} a pris beaucoup de retard et je "
            "n'ai aucune explication.",
            "Bonjour, ma commande {order} a {days_late} jours de retard sur la date prévue. Pouvez-vous "
            "relancer le transporteur ?",
            "Bonsoir, la date de livraison de mon colis est dépassée depuis plusieurs jours, pourquoi cela "
            "tarde-t-il autant ?",
            "Commande {order} passée le {order_date}, censée arriver le {eta}, et je n'ai toujours rien. Que "
            "se passe-t-il ?",
            # eval
            "Bonjour, la commande {order} accuse un sérieux retard : le {eta} est passé et personne n'est "
            "venu livrer.",
            "Bonjour, mon paquet n'est toujours pas arrivé alors que le délai annoncé est largement écoulé. "
            "Pouvez-vous faire le point ?",
            "Bonjour, toujours rien reçu pour la commande {order} alors que la date prévue était le {eta}. "
            "Que dois-je faire ?",
            "Bonsoir, mon colis semble bloqué depuis plusieurs jours. Pourriez-vous vous renseigner ?",
        ),
        answers=(
            "Je vous prie de nous excuser pour ce retard. D'après {carrier}, le colis de la commande {order} "
            "a été retardé lors d'un passage en centre de tri. La nouvelle date de livraison estimée est le "
            "{new_eta}. Vous pouvez suivre son avancée avec le numéro {tracking}.",
            "Toutes nos excuses pour ce contretemps. La commande {order} est bien en cours d'acheminement, "
            "mais {carrier} signale un retard de {days_late} jours. La livraison est désormais prévue le "
            "{new_eta}. Si le colis n'est pas arrivé à cette date, nous vous renverrons l'article ou vous "
            "rembourserons intégralement.",
            "Nous sommes navrés pour ce retard. J'ai ouvert une réclamation auprès de {carrier} (dossier "
            "{ticket}) pour la commande {order}. Voici la suite :\n"
            "1. Le transporteur dispose de 48 heures pour localiser le colis.\n"
            "2. S'il est retrouvé, il vous sera livré au plus tard le {new_eta}.\n"
            "3. Sinon, nous vous renverrons {votre_product} sans frais supplémentaires.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Est-ce que je peux obtenir un geste commercial pour ce retard ?",
                    "Vu le retard, serait-il possible d'avoir une compensation ?",
                    "Pouvez-vous au moins me rembourser les frais de port ?",
                ),
                answers=(
                    "Bien sûr. Compte tenu du retard, je vous rembourse les frais de livraison de "
                    "{shipping_fee} sur votre moyen de paiement d'origine ; le remboursement apparaîtra sous "
                    "3 à 5 jours ouvrés.",
                    "Je comprends tout à fait. Je viens d'ajouter un bon d'achat de {voucher} à votre compte, "
                    "utilisable sur votre prochaine commande pendant 6 mois.",
                ),
            ),
            FollowUp(
                users=(
                    "Si le colis n'arrive pas avant le {new_eta}, est-ce que je pourrai annuler ?",
                    "Je préfère annuler si cela tarde encore, c'est possible ?",
                    "Et si finalement le colis n'arrive jamais ?",
                ),
                answers=(
                    "Oui, tout à fait. Si le colis n'est pas livré le {new_eta}, écrivez-nous simplement et "
                    "nous rembourserons intégralement la commande {order}, soit {price}, sans que vous ayez "
                    "à retourner quoi que ce soit.",
                    "Absolument. Passé le {new_eta}, sans livraison de votre côté, nous annulerons la commande "
                    "et vous rembourserons {price} sous 5 jours ouvrés. Si le colis arrive malgré tout "
                    "ensuite, il vous suffira de le refuser.",
                ),
            ),
        ),
    ),
    Intent(
        name="refund",
        need="order",
        openings=(
            "Bonjour, j'ai renvoyé ma commande {order} il y a deux semaines et je n'ai toujours pas reçu "
            "mon remboursement.",
            "Bonjour, quand vais-je recevoir le remboursement de {mon_product} ?",
            "Je souhaiterais obtenir le remboursement de ma commande {order}, s'il vous plaît.",
            "Bonjour, pouvez-vous me confirmer que le remboursement de la commande {order} a bien été lancé ?",
            "Mon retour est arrivé chez vous d'après le suivi, mais toujours pas de remboursement. Que se "
            "passe-t-il ?",
            "Bonjour, combien de temps faut-il pour obtenir un remboursement après un retour ?",
            "Bonjour, vous avez reçu mon colis retour pour la commande {order}, mais je ne vois toujours pas "
            "les {price} recrédités.",
            "Bonjour, je n'ai toujours pas été remboursé pour l'article que je vous ai renvoyé. Pouvez-vous "
            "vérifier ?",
            "Je vois que mon retour a été accepté, mais l'argent n'est pas revenu sur {mon_payment_method}. "
            "C'est normal ?",
            "Bonjour, où en est le remboursement de {price} pour la commande {order} ? Cela commence à faire "
            "long.",
            "Bonsoir, j'ai retourné {le_product} il y a plus de dix jours et rien n'a été recrédité sur mon "
            "compte bancaire.",
            "Bonjour, pouvez-vous m'indiquer la date à laquelle je serai remboursé pour le retour de la "
            "commande {order} ?",
            # eval
            "Bonjour, le montant de la commande {order} devait m'être restitué après mon retour, mais je ne "
            "l'ai jamais vu passer.",
            "Bonjour, aucun crédit n'apparaît sur mon relevé alors que vous avez réceptionné l'article "
            "retourné. Pouvez-vous regarder ?",
            "Bonjour, j'attends le remboursement de la commande {order} depuis plus de 10 jours, pouvez-vous "
            "regarder ?",
            "Bonsoir, à quel moment l'argent de mon retour sera-t-il reversé sur mon compte ?",
        ),
        answers=(
            "J'ai bien retrouvé votre dossier. Le retour de la commande {order} a été réceptionné dans notre "
            "entrepôt le {ship_date} et le remboursement de {price} a été validé. Il apparaîtra sur votre "
            "{payment_method} d'ici le {refund_date}.",
            "Votre retour pour la commande {order} a bien été contrôlé. Nous avons émis un remboursement de "
            "{price} sur le moyen de paiement utilisé lors de l'achat ({payment_method}). Selon votre "
            "banque, le montant sera visible au plus tard le {refund_date}.",
            "Le remboursement de la commande {order} n'avait pas encore été déclenché : le colis retour est "
            "arrivé le {ship_date} et attendait son contrôle. Je viens de le valider, et {price} seront "
            "reversés sur votre {payment_method} d'ici le {refund_date}.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Est-ce que les frais de livraison seront aussi remboursés ?",
                    "Les frais de port me seront-ils remboursés également ?",
                    "Et les frais d'expédition, ils sont inclus dans le remboursement ?",
                ),
                answers=(
                    "Oui, les frais de livraison initiaux de {shipping_fee} sont remboursés en plus, puisque "
                    "la totalité de la commande {order} nous a été retournée. Seuls les frais de retour "
                    "restent à votre charge lorsque le retour n'est pas lié à un défaut.",
                    "Dans le cadre d'un retour complet, nous remboursons aussi les frais de livraison "
                    "initiaux, soit {shipping_fee}. Ce montant fait l'objet d'une opération séparée, visible "
                    "sous 3 à 5 jours ouvrés.",
                ),
            ),
            FollowUp(
                users=(
                    "Et si je ne vois rien arriver d'ici le {refund_date} ?",
                    "Que dois-je faire si le montant n'apparaît pas sur mon relevé ?",
                    "Comment puis-je vérifier que le remboursement a bien été envoyé ?",
                ),
                answers=(
                    "Si le montant n'apparaît pas après le {refund_date}, répondez simplement à ce message : "
                    "nous vous transmettrons l'attestation de remboursement avec sa référence bancaire, que "
                    "votre banque pourra retrouver.",
                    "Vous allez recevoir un e-mail de confirmation avec la référence du remboursement. Sans "
                    "nouvelles de votre banque après le {refund_date}, contactez-nous en indiquant la "
                    "commande {order} et nous ferons le nécessaire.",
                ),
            ),
        ),
    ),
    Intent(
        name="return_label",
        need="order",
        openings=(
            "Bonjour, je voudrais retourner {mon_product}, comment obtenir une étiquette de retour ?",
            "Bonjour, pouvez-vous m'envoyer une étiquette de retour pour la commande {order} ?",
            "Je n'ai pas trouvé de bon de retour dans le colis de la commande {order}, comment faire ?",
            "Bonjour, l'article ne me convient pas et je souhaite le renvoyer. Comment cela se passe-t-il ?",
            "Comment est-ce que je peux renvoyer ma commande {order} ? Il me faut une étiquette.",
            "Bonjour, l'étiquette de retour que j'ai reçue ne s'imprime pas correctement, pouvez-vous m'en "
            "renvoyer une ?",
            "Bonjour, je voudrais renvoyer {le_product} de la commande {order}, pouvez-vous me transmettre "
            "un bon de retour prépayé ?",
            "Bonjour, finalement {le_product} ne me plaît pas et je voudrais faire un retour. Où puis-je "
            "obtenir l'étiquette ?",
            "Comment dois-je procéder pour renvoyer un article ? Je n'ai pas d'étiquette de retour.",
            "Bonjour, je compte renvoyer l'intégralité de la commande {order}. Pourriez-vous me fournir "
            "l'étiquette d'envoi ?",
            "Bonjour, je suis encore dans le délai de rétractation et je veux retourner {mon_product}. "
            "Pouvez-vous m'envoyer de quoi l'expédier ?",
            "Je n'arrive pas à télécharger l'étiquette de retour de la commande {order} depuis mon espace "
            "client.",
            # eval
            "Bonjour, j'aimerais obtenir le QR code ou l'étiquette pour déposer le retour de la commande "
            "{order} en point relais.",
            "Bonsoir, je ne garde pas l'appareil que j'ai reçu et je souhaiterais vous le réexpédier. Que "
            "dois-je imprimer ?",
            "Bonjour, j'aimerais faire un retour pour la commande {order}. Pouvez-vous me générer le "
            "bordereau ?",
            "Bonsoir, {le_product} ne correspond pas à mes attentes. Puis-je avoir une étiquette de retour ?",
        ),
        answers=(
            "Je viens de générer votre étiquette de retour prépayée pour la commande {order} ; vous la "
            "recevrez par e-mail dans quelques minutes. Voici comment procéder :\n"
            "1. Imprimez l'étiquette et collez-la sur le colis.\n"
            "2. Déposez le colis dans un point de retrait {carrier} avant le {return_deadline}.\n"
            "3. Conservez la preuve de dépôt jusqu'au remboursement.",
            "C'est fait : l'étiquette de retour pour {le_product} (commande {order}) est disponible dans "
            "votre espace client, rubrique « Mes commandes ». Vous avez jusqu'au {return_deadline} pour "
            "déposer le colis chez {carrier}. Le remboursement de {price} sera lancé dès réception et "
            "contrôle de l'article.",
            "Aucun souci. Vous trouverez dans l'e-mail que je viens de vous envoyer une étiquette {carrier} "
            "valable pour la commande {order}. Le retour est gratuit : il suffit de déposer le colis avant "
            "le {return_deadline}. Pensez à remettre l'article dans son emballage d'origine si possible.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Je n'ai pas d'imprimante, comment puis-je faire ?",
                    "Et si je ne peux pas imprimer l'étiquette ?",
                    "Je n'ai pas accès à une imprimante en ce moment, y a-t-il une autre solution ?",
                ),
                answers=(
                    "Pas de problème : l'e-mail contient aussi un code QR. Présentez-le au point de retrait "
                    "{carrier}, le commerçant imprimera l'étiquette pour vous.",
                    "Dans ce cas, utilisez le code de retour {return_code} indiqué dans l'e-mail : le point de "
                    "retrait {carrier} se charge d'imprimer l'étiquette sur place, sans frais.",
                ),
            ),
            FollowUp(
                users=(
                    "Faut-il absolument renvoyer l'article dans son emballage d'origine ?",
                    "J'ai jeté le carton d'origine, est-ce un problème ?",
                    "Est-ce que je dois renvoyer la boîte d'origine aussi ?",
                ),
                answers=(
                    "L'emballage d'origine n'est pas obligatoire. Il suffit que l'article soit bien protégé "
                    "dans un carton solide pour éviter tout dommage pendant le transport.",
                    "Ce n'est pas un problème. Emballez simplement l'article avec soin dans un carton adapté ; "
                    "nous vous conseillons de glisser une note avec le numéro {order} à l'intérieur pour "
                    "faciliter le traitement.",
                ),
            ),
        ),
    ),
    Intent(
        name="damaged_item",
        need="order",
        openings=(
            "Bonjour, j'ai reçu {mon_product} aujourd'hui, mais l'article est arrivé cassé.",
            "Bonjour, le colis de ma commande {order} était abîmé et l'appareil à l'intérieur ne fonctionne "
            "pas.",
            "L'article de la commande {order} est arrivé endommagé, avec de grosses rayures. Que pouvez-vous "
            "faire ?",
            "Bonjour, je viens de déballer ma commande {order} et l'appareil ne s'allume pas.",
            "Mon colis est arrivé complètement écrasé et le contenu est endommagé. Que dois-je faire ?",
            "Bonjour, dans ma commande {order}, l'appareil est rayé et il manque un accessoire.",
            "Bonjour, à l'ouverture du colis, {le_product} était en morceaux. Que proposez-vous ?",
            "Bonjour, la commande {order} est arrivée avec le carton déchiré et l'appareil cabossé.",
            "Le produit livré avec la commande {order} est défectueux dès la sortie de la boîte : impossible "
            "de le faire fonctionner.",
            "Bonsoir, j'ai reçu ma commande ce matin et le boîtier de l'appareil est fendu. Comment obtenir "
            "un échange ?",
            "Bonjour, j'ai découvert une grosse marque de choc sur {mon_product} en ouvrant la commande "
            "{order} hier.",
            "Bonjour, le colis a visiblement été maltraité pendant le transport : l'article est abîmé et "
            "inutilisable.",
            # eval
            "Bonjour, la commande {order} m'est parvenue en mauvais état : une pièce est cassée et "
            "l'emballage était éventré.",
            "Bonjour, quelle est la marche à suivre quand on reçoit un appareil déjà abîmé ? Le mien est "
            "bosselé sur le dessus.",
            "Bonjour, la commande {order} m'a été livrée hier et l'appareil présente une fissure sur le côté.",
            "Bonsoir, l'article que j'ai reçu est endommagé, je souhaiterais un remplacement.",
        ),
        answers=(
            "Toutes nos excuses pour ce désagrément. J'ai enregistré votre réclamation pour la commande "
            "{order} sous la référence {ticket}. Un nouvel exemplaire de {votre_product} part aujourd'hui "
            "même de notre entrepôt et devrait vous parvenir le {eta}. Vous recevrez aussi une étiquette de "
            "retour gratuite pour nous renvoyer l'article endommagé.",
            "Nous sommes navrés pour ce désagrément. Voici la marche à suivre pour la commande {order} :\n"
            "1. Prenez une ou deux photos de l'article et de l'emballage.\n"
            "2. Envoyez-les en réponse à l'e-mail de confirmation de votre réclamation {ticket}.\n"
            "3. Dès réception, nous expédions un remplacement gratuit, avec une livraison prévue le {eta}.",
            "C'est très contrariant, je le comprends. J'ai immédiatement lancé le remplacement de "
            "{votre_product} (commande {order}) : le nouvel article sera expédié avec {carrier} et livré le "
            "{eta}. Inutile d'attendre le retour de l'article abîmé ; déposez-le simplement avec "
            "l'étiquette prépayée que vous recevrez par e-mail.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Finalement, je préférerais un remboursement plutôt qu'un remplacement, c'est possible ?",
                    "Est-ce que je peux avoir un remboursement à la place ?",
                    "Plutôt qu'un nouvel article, pourriez-vous me rembourser ?",
                ),
                answers=(
                    "Bien sûr. J'ai annulé le remplacement et lancé le remboursement intégral de {price} pour "
                    "la commande {order}. Il sera visible sur votre compte sous 3 à 5 jours ouvrés après le "
                    "dépôt du colis retour.",
                    "C'est entendu : je remplace la demande d'échange par un remboursement de {price}. Il "
                    "sera effectué sur le moyen de paiement de la commande dès que {carrier} aura pris en "
                    "charge le colis retour.",
                ),
            ),
            FollowUp(
                users=(
                    "Dois-je vous renvoyer l'article abîmé ?",
                    "Est-ce que je dois vous retourner l'appareil cassé ?",
                    "Faut-il que je renvoie l'appareil endommagé avant de recevoir le nouveau ?",
                ),
                answers=(
                    "Oui, merci de nous le renvoyer avec l'étiquette prépayée dans les 14 jours, afin que "
                    "nous puissions faire jouer l'assurance du transporteur. Vous n'avez pas besoin "
                    "d'attendre ce retour pour recevoir le nouvel article.",
                    "Oui, l'article endommagé doit nous être retourné, mais rien ne presse : vous avez "
                    "jusqu'au {return_deadline} pour le déposer dans un point de retrait {carrier} avec "
                    "l'étiquette gratuite.",
                ),
            ),
        ),
    ),
    Intent(
        name="password_reset",
        need="email",
        openings=(
            "Bonjour, j'ai oublié mon mot de passe et je n'arrive plus à me connecter.",
            "Je ne reçois pas l'e-mail de réinitialisation du mot de passe, pouvez-vous m'aider ?",
            "Bonjour, mon compte est bloqué après plusieurs tentatives de connexion. Que faire ?",
            "Comment est-ce que je peux changer mon mot de passe ?",
            "Bonjour, impossible de me connecter avec l'adresse {email}, le site dit que le mot de passe est "
            "incorrect.",
            "Le lien pour réinitialiser mon mot de passe a expiré, comment en obtenir un nouveau ?",
            "Bonjour, je ne me souviens plus de mon mot de passe pour le compte {email}, pouvez-vous m'aider "
            "à en créer un nouveau ?",
            "Bonjour, quand je clique sur « Mot de passe oublié », il ne se passe rien. Comment faire ?",
            "Bonsoir, pouvez-vous m'envoyer un lien pour redéfinir mon mot de passe à l'adresse {email} ?",
            "Bonjour, mon mot de passe n'est plus reconnu depuis la mise à jour de l'application et je ne "
            "peux plus rien faire sur mon compte.",
            "Bonjour, le mail pour changer de mot de passe n'arrive pas sur {email}, même dans les spams.",
            "Comment réinitialiser mon mot de passe ? Je l'ai perdu et je voudrais accéder à mon compte.",
            # eval
            "Bonjour, l'accès à mon compte {email} m'est refusé, je crois que j'ai oublié mes identifiants. "
            "Pouvez-vous les réinitialiser ?",
            "Bonsoir, je suis incapable de retrouver mon code d'accès au site, que dois-je faire pour en "
            "définir un autre ?",
            "Bonjour, je n'arrive plus à accéder à mon espace client, j'ai dû me tromper de mot de passe "
            "plusieurs fois.",
            "Bonsoir, pourriez-vous réinitialiser le mot de passe du compte {email} ?",
        ),
        answers=(
            "Je viens de vous envoyer un lien de réinitialisation à l'adresse {email}. Il est valable "
            "24 heures. Voici les étapes :\n"
            "1. Ouvrez l'e-mail « Réinitialisation de votre mot de passe ».\n"
            "2. Cliquez sur le lien et choisissez un nouveau mot de passe d'au moins 10 caractères.\n"
            "3. Reconnectez-vous avec ce nouveau mot de passe.",
            "J'ai débloqué votre compte et envoyé un nouveau lien de réinitialisation à {email}. Pensez à "
            "vérifier vos courriers indésirables si vous ne le voyez pas d'ici quelques minutes. Le lien "
            "expire au bout de 24 heures.",
            "C'est fait : un e-mail de réinitialisation vient de partir vers {email}. Si vous ne le recevez "
            "pas, vérifiez le dossier « Spam », puis réessayez depuis la page de connexion en cliquant sur "
            "« Mot de passe oublié ? ».",
        ),
        followups=(
            FollowUp(
                users=(
                    "Je n'ai toujours rien reçu, même dans les spams.",
                    "L'e-mail n'arrive pas, qu'est-ce que je peux faire ?",
                    "Toujours aucun message dans ma boîte de réception, c'est normal ?",
                ),
                answers=(
                    "Je viens de renvoyer le lien manuellement à {email}. Certaines messageries mettent "
                    "jusqu'à 15 minutes à le distribuer. Si rien n'arrive, indiquez-moi le numéro d'une de "
                    "vos commandes et je mettrai à jour l'adresse de votre compte après vérification.",
                    "Certaines messageries filtrent nos e-mails. Ajoutez notre adresse d'expédition à vos "
                    "contacts, puis cliquez à nouveau sur « Mot de passe oublié ? ». Si cela ne fonctionne "
                    "toujours pas, je peux vous envoyer un code de vérification par SMS.",
                ),
            ),
            FollowUp(
                users=(
                    "Quelles sont les règles pour le nouveau mot de passe ?",
                    "Mon nouveau mot de passe est refusé, pourquoi ?",
                    "Le site n'accepte pas mon nouveau mot de passe, quelles sont les conditions ?",
                ),
                answers=(
                    "Votre mot de passe doit comporter au moins 10 caractères, dont une majuscule, un chiffre "
                    "et un caractère spécial. Il doit aussi être différent de vos trois derniers mots de passe.",
                    "Pour des raisons de sécurité, le nouveau mot de passe doit contenir :\n"
                    "- au moins 10 caractères ;\n"
                    "- une majuscule et une minuscule ;\n"
                    "- au moins un chiffre ou un caractère spécial.\n"
                    "Il ne peut pas être identique à l'ancien.",
                ),
            ),
        ),
    ),
    Intent(
        name="invoice_copy",
        need="order",
        openings=(
            "Bonjour, pourriez-vous m'envoyer la facture de ma commande {order} ?",
            "Bonjour, j'ai besoin d'une facture pour mon employeur, comment puis-je l'obtenir ?",
            "Je ne trouve pas la facture de mon achat du {order_date}, où est-elle disponible ?",
            "Bonjour, serait-il possible d'avoir une copie de la facture pour la commande {order} ?",
            "J'ai perdu la facture de {mon_product}, j'en ai besoin pour la garantie.",
            "Bonjour, pouvez-vous me renvoyer par e-mail la facture correspondant à la commande {order} ?",
            "Bonjour, j'aurais besoin d'un justificatif d'achat pour la commande {order}, c'est pour une "
            "note de frais.",
            "Bonjour, pourriez-vous m'adresser la facture de {mon_product} ? J'en ai besoin pour ma "
            "comptabilité.",
            "La facture de la commande {order} n'apparaît pas dans mon espace client, pouvez-vous me "
            "l'envoyer ?",
            "Bonsoir, je dois fournir une preuve d'achat à mon assurance, pouvez-vous m'envoyer la facture "
            "correspondante ?",
            "Bonjour, est-ce que je peux recevoir une facture détaillée avec la TVA pour la commande "
            "{order} ?",
            "Bonjour, je n'ai jamais reçu de facture pour mon achat de {price}, est-ce normal ?",
            # eval
            "Bonjour, merci de me transmettre un duplicata de la facture de la commande {order}, j'ai égaré "
            "l'original.",
            "Bonjour, je cherche une pièce justificative pour mon achat du {order_date}, pouvez-vous me "
            "faire parvenir la facture ?",
            "Bonjour, où puis-je télécharger la facture de la commande {order} ?",
            "Bonsoir, il me faudrait un duplicata de facture pour un achat récent, est-ce possible ?",
        ),
        answers=(
            "Je viens de vous envoyer la facture {invoice} de la commande {order} par e-mail. Elle est "
            "également téléchargeable à tout moment depuis votre espace client, rubrique « Mes commandes », "
            "en cliquant sur « Télécharger la facture ».",
            "Voici les informations de votre facture : numéro {invoice}, commande {order} du {order_date}, "
            "montant total {price} TTC. Une copie au format PDF vient de partir vers votre adresse e-mail.",
            "Vous pouvez récupérer la facture vous-même en quelques clics :\n"
            "1. Connectez-vous à votre espace client.\n"
            "2. Ouvrez « Mes commandes » puis la commande {order}.\n"
            "3. Cliquez sur « Télécharger la facture » (document {invoice}).\n"
            "Je vous l'ai aussi envoyée par e-mail pour plus de simplicité.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Est-il possible d'ajouter le nom de mon entreprise sur la facture ?",
                    "Pouvez-vous faire apparaître le nom de ma société sur la facture ?",
                    "J'aurais besoin que la facture soit au nom de mon entreprise, est-ce faisable ?",
                ),
                answers=(
                    "Oui, c'est possible. Indiquez-moi la raison sociale et l'adresse de facturation de "
                    "votre entreprise, et je vous enverrai une facture rectifiée sous 24 heures.",
                    "Tout à fait. Il me suffit de la raison sociale, de l'adresse et, si vous en avez un, du "
                    "numéro de TVA intracommunautaire. La facture corrigée remplacera la facture {invoice}.",
                ),
            ),
            FollowUp(
                users=(
                    "La TVA est-elle bien indiquée sur la facture ?",
                    "Est-ce que la facture fait apparaître le montant de la TVA ?",
                    "J'ai besoin du détail de la TVA, figure-t-il sur le document ?",
                ),
                answers=(
                    "Oui, la facture {invoice} détaille le montant hors taxes, le taux de TVA de 20 % et le "
                    "total TTC de {price}.",
                    "Oui : sur un total de {price} TTC, la facture indique séparément le montant HT et la TVA "
                    "à 20 %. Elle est donc valable pour une note de frais.",
                ),
            ),
        ),
    ),
    Intent(
        name="subscription_cancellation",
        need="email",
        openings=(
            "Bonjour, je souhaite résilier mon abonnement {plan}.",
            "Comment puis-je annuler mon abonnement ? Je ne trouve pas l'option sur le site.",
            "Bonjour, je voudrais arrêter mon abonnement avant le prochain prélèvement du {renewal_date}.",
            "Je n'utilise plus mon abonnement {plan}, pouvez-vous le résilier s'il vous plaît ?",
            "Bonjour, est-il possible de mettre fin à mon abonnement {plan} dès maintenant ?",
            "Bonjour, je souhaite mettre fin à mon abonnement ; l'adresse e-mail de mon compte est {email}.",
            "Bonjour, je ne souhaite plus payer {plan_price} par mois pour l'abonnement {plan}, merci de "
            "l'arrêter.",
            "Bonjour, je veux me désabonner de la formule {plan}. Mon adresse e-mail client est {email}.",
            "Comment faire pour ne plus être prélevé chaque mois pour l'abonnement Opaline ?",
            "Bonsoir, je souhaite résilier l'abonnement rattaché au compte {email}, il ne me sert plus à "
            "rien.",
            "Bonjour, je voudrais que mon abonnement {plan} ne soit pas reconduit le mois prochain.",
            "Bonjour, merci de mettre un terme à mon abonnement {plan} (compte {email}) et de cesser les "
            "prélèvements sur {mon_payment_method}.",
            # eval
            "Bonjour, je désire me désinscrire de l'offre {plan} ; je ne veux plus aucun prélèvement "
            "mensuel.",
            "Bonsoir, l'abonnement lié à {email} ne m'intéresse plus, pourriez-vous l'interrompre ?",
            "Bonsoir, pourriez-vous procéder à la résiliation de mon abonnement {plan} ? Merci.",
            "Bonjour, je veux stopper le renouvellement automatique de mon abonnement, l'adresse du compte "
            "est {email}.",
        ),
        answers=(
            "C'est fait : votre abonnement {plan} est résilié. Il restera actif jusqu'au {end_date}, puis "
            "aucun nouveau prélèvement ne sera effectué. Vous recevrez une confirmation de résiliation à "
            "l'adresse {email}.",
            "J'ai bien pris en compte votre demande de résiliation de l'abonnement {plan} ({plan_price} par "
            "mois). Vous conservez vos avantages jusqu'à la fin de la période en cours, le {end_date}. Le "
            "prélèvement prévu le {renewal_date} est annulé.",
            "Votre demande est enregistrée. Voici le récapitulatif :\n"
            "- abonnement : {plan}\n"
            "- fin des avantages : {end_date}\n"
            "- prochain prélèvement : annulé\n"
            "Un e-mail de confirmation vient d'être envoyé à {email}.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Si je change d'avis, est-ce que je pourrai me réabonner plus tard ?",
                    "Est-il possible de reprendre l'abonnement dans quelques mois ?",
                    "Et si je veux revenir plus tard, je garde mon historique ?",
                ),
                answers=(
                    "Bien sûr, vous pourrez vous réabonner à tout moment depuis votre espace client, rubrique "
                    "« Mon abonnement ». Votre historique de commandes et vos adresses sont conservés.",
                    "Oui, vous pouvez réactiver l'abonnement {plan} quand vous le souhaitez, au tarif en "
                    "vigueur à ce moment-là. Vos commandes et vos adresses restent enregistrées dans votre "
                    "compte.",
                ),
            ),
            FollowUp(
                users=(
                    "Est-ce que le mois en cours me sera remboursé ?",
                    "Les jours restants du mois seront-ils remboursés ?",
                    "Puis-je récupérer une partie du dernier paiement ?",
                ),
                answers=(
                    "Le mois en cours n'est pas remboursé, mais vous continuez à profiter de tous les "
                    "avantages de l'abonnement {plan} jusqu'au {end_date}.",
                    "Conformément à nos conditions, la période déjà entamée reste due ; en contrepartie, "
                    "votre abonnement reste pleinement actif jusqu'au {end_date}. Aucun autre montant ne vous "
                    "sera prélevé.",
                ),
            ),
        ),
    ),
    Intent(
        name="address_change",
        need="order",
        openings=(
            "Bonjour, j'ai fait une erreur dans l'adresse de livraison de ma commande {order}. La bonne "
            "adresse est {new_address}.",
            "Bonjour, est-il possible de modifier l'adresse de livraison de ma dernière commande ? J'ai "
            "déménagé.",
            "Je voudrais faire livrer la commande {order} au {new_address} plutôt qu'à mon ancienne adresse.",
            "Bonjour, pouvez-vous changer l'adresse de livraison de la commande {order} ? La nouvelle "
            "adresse est {new_address}.",
            "Peut-on encore changer l'adresse de livraison d'une commande passée hier ?",
            "Bonjour, je ne serai pas chez moi cette semaine, puis-je faire livrer mon colis chez mes parents "
            "à {city} ?",
            "Bonjour, il y a une faute dans le numéro de rue de la commande {order}, il faut livrer au "
            "{new_address}.",
            "Bonjour, le code postal de ma commande est erroné, pouvez-vous le rectifier avant "
            "l'expédition ?",
            "Bonsoir, pourriez-vous envoyer la commande {order} à cette adresse plutôt : {new_address} ? Je "
            "serai en déplacement.",
            "Est-il encore temps de changer l'adresse de livraison ? Je voudrais recevoir mon colis à "
            "{city}.",
            "Bonjour, pour la commande {order}, merci de remplacer l'adresse de livraison par celle-ci : "
            "{new_address}.",
            "Bonjour, je voudrais faire livrer ma dernière commande sur mon lieu de travail plutôt qu'à mon "
            "domicile, c'est possible ?",
            # eval
            "Bonjour, l'adresse saisie pour la commande {order} est incomplète, la bonne est {new_address}. "
            "Pouvez-vous la mettre à jour ?",
            "Bonjour, puis-je encore indiquer une autre adresse de réception pour un achat que je viens de "
            "faire ?",
            "Bonjour, merci de bien vouloir modifier l'adresse de la commande {order} : je souhaite une "
            "livraison au {new_address}.",
            "Bonsoir, j'ai indiqué une ancienne adresse pour ma commande, pouvez-vous la corriger ?",
        ),
        answers=(
            "C'est fait : la commande {order} n'était pas encore expédiée, j'ai donc pu modifier l'adresse "
            "de livraison. Elle sera livrée au {new_address}, toujours pour le {eta}.",
            "J'ai contacté notre entrepôt à temps : l'adresse de la commande {order} est désormais "
            "{new_address}. Vous recevrez un e-mail de confirmation, et la livraison reste prévue le {eta}.",
            "La commande {order} a déjà été remise à {carrier}, je ne peux donc plus modifier l'adresse de "
            "notre côté. J'ai toutefois demandé une réexpédition vers l'adresse suivante : {new_address}. "
            "Vous pouvez suivre le colis avec le numéro {tracking}.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Pouvez-vous aussi mettre à jour mon adresse pour mes prochaines commandes ?",
                    "Est-ce que cette adresse sera enregistrée pour les prochaines fois ?",
                    "Faut-il que je change aussi l'adresse dans mon compte ?",
                ),
                answers=(
                    "Je l'ai ajoutée à votre carnet d'adresses et définie comme adresse par défaut. Vos "
                    "prochaines commandes seront donc livrées au {new_address}.",
                    "La modification ne concerne que la commande {order}. Pour vos prochains achats, "
                    "rendez-vous dans votre espace client, rubrique « Mes adresses », et définissez la "
                    "nouvelle adresse comme adresse par défaut.",
                ),
            ),
            FollowUp(
                users=(
                    "Est-ce que ce changement entraîne des frais supplémentaires ?",
                    "Y a-t-il un coût pour la modification d'adresse ?",
                    "Je vais devoir payer quelque chose en plus pour ce changement ?",
                ),
                answers=(
                    "Non, la modification d'adresse est gratuite tant que la nouvelle adresse se trouve en "
                    "France métropolitaine.",
                    "Aucun frais supplémentaire : le changement est pris en charge par nos soins, et la date "
                    "de livraison prévue le {eta} est maintenue.",
                ),
            ),
        ),
        ask=(
            "Pour modifier l'adresse, pourriez-vous m'indiquer le numéro de commande (CMD-XXXXXX) ainsi que "
            "la nouvelle adresse complète ?",
            "Je peux m'en occuper si le colis n'est pas encore parti. Quel est le numéro de la commande, et "
            "à quelle adresse faut-il livrer le colis ?",
        ),
        give=(
            "C'est la commande {order}, et la nouvelle adresse est {new_address}.",
            "Numéro de commande : {order}. Nouvelle adresse : {new_address}.",
            "Il s'agit de {order} ; merci de livrer au {new_address}.",
            "Commande {order}, à livrer désormais au {new_address}, s'il vous plaît.",
            # eval
            "Voici : commande {order}, nouvelle adresse {new_address}.",
            "La commande porte le numéro {order} et l'adresse correcte est {new_address}.",
        ),
    ),
    Intent(
        name="failed_payment",
        need=None,
        openings=(
            "Bonjour, mon paiement a été refusé alors que ma carte est valide. Pourquoi ?",
            "Bonjour, je n'arrive pas à valider ma commande, le paiement échoue à chaque fois.",
            "Le paiement avec {mon_payment_method} ne passe pas, que dois-je faire ?",
            "Bonjour, j'ai un message « paiement refusé » en essayant d'acheter {un_product}.",
            "Bonjour, j'essaie de payer ma commande de {price} mais la transaction est rejetée.",
            "Bonjour, la page de paiement affiche une erreur et ma commande n'est pas validée. Pouvez-vous "
            "m'aider ?",
            "Bonjour, ma carte bancaire est systématiquement refusée sur votre site au moment de régler.",
            "Bonjour, la validation 3D Secure échoue à chaque fois que je paie par {payment_method}, que "
            "faire ?",
            "Bonsoir, je n'arrive pas à finaliser mon achat : la page de paiement tourne dans le vide puis "
            "affiche un échec.",
            "Bonjour, pourquoi mon paiement de {price} est-il refusé ? J'ai assez d'argent sur mon compte.",
            "Bonjour, j'ai essayé trois fois de payer avec {mon_payment_method} et ça ne marche jamais. "
            "C'est énervant.",
            "Bonjour, je ne reçois pas le code de validation de ma banque pour confirmer le paiement, du "
            "coup la commande ne passe pas.",
            # eval
            "Bonjour, le règlement de mon panier de {price} n'aboutit pas, j'obtiens une erreur à la "
            "dernière étape.",
            "Bonsoir, la transaction ne se fait pas quand je veux acheter {un_product}, pouvez-vous voir "
            "d'où vient le blocage ?",
            "Bonsoir, impossible de régler mon panier, le paiement est refusé à chaque tentative. Que se "
            "passe-t-il ?",
            "Bonjour, ma banque dit que tout est en ordre, pourtant votre site refuse le paiement avec "
            "{mon_payment_method}.",
        ),
        answers=(
            "Les refus de paiement viennent le plus souvent de la validation 3D Secure. Voici ce que je vous "
            "conseille :\n"
            "1. Vérifiez que votre plafond de paiement n'est pas atteint.\n"
            "2. Gardez la page ouverte jusqu'à la confirmation dans l'application de votre banque.\n"
            "3. Réessayez : votre panier de {price} est conservé pendant 48 heures.",
            "Je constate dans notre système deux tentatives refusées par votre banque, sans précision de "
            "motif. Votre panier ({product}, {price}) est réservé pendant 48 heures : vous pouvez réessayer "
            "avec un autre moyen de paiement ou contacter votre banque pour autoriser la transaction.",
            "Aucun montant n'a été débité lors des tentatives échouées ; tout au plus une pré-autorisation "
            "temporaire peut apparaître, et elle disparaît sous 72 heures. Je vous invite à réessayer avec "
            "votre {payment_method} après avoir désactivé votre bloqueur de publicités, ou à choisir un "
            "autre moyen de paiement. Votre panier de {price} reste sauvegardé.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Quels autres moyens de paiement acceptez-vous ?",
                    "Est-ce que je peux payer autrement ?",
                    "Y a-t-il d'autres façons de régler ma commande ?",
                ),
                answers=(
                    "Nous acceptons les cartes bancaires (CB, Visa, Mastercard), PayPal et le paiement en "
                    "trois fois sans frais à partir de 150 €.",
                    "Vous pouvez régler par carte bancaire, par PayPal ou par virement ; dans ce dernier cas, "
                    "la commande est expédiée à réception des fonds, généralement sous 2 jours ouvrés.",
                ),
            ),
            FollowUp(
                users=(
                    "Est-ce que les tentatives échouées ont été débitées ?",
                    "Ai-je payé quelque chose lors des essais refusés ?",
                    "Vais-je voir des prélèvements en double sur mon compte ?",
                ),
                answers=(
                    "Non, aucune somme n'a été encaissée. Vous verrez peut-être une autorisation temporaire "
                    "de {price} sur votre compte, mais elle sera annulée automatiquement sous 3 à 5 jours.",
                    "Aucun débit n'a eu lieu : seule la tentative validée sera encaissée. Si un montant de "
                    "{price} apparaît en double sur votre relevé, il s'agit d'une pré-autorisation qui "
                    "disparaîtra d'elle-même sous quelques jours.",
                ),
            ),
        ),
    ),
    Intent(
        name="promo_code",
        need=None,
        openings=(
            "Bonjour, le code promo {promo} ne fonctionne pas sur ma commande.",
            "Bonjour, le site m'indique que le code {promo} n'est pas valide, pourquoi ?",
            "Mon code de réduction {promo} est refusé au moment de payer, pouvez-vous vérifier ?",
            "Bonjour, j'ai reçu le code {promo} par e-mail mais il ne s'applique pas à mon panier.",
            "Pourquoi la réduction du code {promo} n'est-elle pas prise en compte ?",
            "Bonjour, impossible d'utiliser le code {promo} pour acheter {un_product}. Est-il encore valable ?",
            "Bonjour, j'ai saisi le code {promo} mais le total de mon panier reste le même.",
            "Le code {promo} me donne une erreur « code expiré », pourtant j'ai reçu l'offre cette semaine.",
            "Bonjour, est-ce que le code {promo} est cumulable avec les soldes ? Il ne s'applique pas.",
            "Bonsoir, la remise de mon code {promo} n'a pas été déduite de ma commande de {price}, "
            "pouvez-vous regarder ?",
            "Bonjour, impossible de profiter de ma réduction avec {promo}, le site dit qu'elle n'est pas "
            "applicable à ces articles.",
            "Bonjour, je comptais utiliser {promo} sur {un_product}, mais le champ « code avantage » me "
            "renvoie une erreur.",
            # eval
            "Bonjour, à quoi correspond le message « conditions non remplies » quand je tape le code "
            "{promo} ?",
            "Bonjour, le rabais promis avec {promo} n'apparaît nulle part dans le récapitulatif de ma "
            "commande.",
            "Bonsoir, le bon de réduction {promo} ne s'applique pas, est-ce un bug ?",
            "Bonjour, pouvez-vous m'expliquer pourquoi le code {promo} est rejeté dans mon panier ?",
        ),
        answers=(
            "J'ai vérifié le code {promo} : il offre {promo_pct} % de réduction à partir de {promo_min} "
            "d'achat et il est valable jusqu'au {promo_end}. Si votre panier n'atteint pas ce minimum, la "
            "réduction ne s'applique pas ; en ajoutant un article, elle sera prise en compte "
            "automatiquement.",
            "Le code {promo} est bien actif, mais il ne s'applique pas aux articles déjà en promotion. Il "
            "donne droit à {promo_pct} % de remise sur les autres produits, jusqu'au {promo_end}. Pensez "
            "aussi à le saisir en majuscules, sans espace.",
            "Le code {promo} a expiré le {promo_end}, ce qui explique le message d'erreur. Pour m'excuser de "
            "ce désagrément, je vous ai créé un code équivalent, {new_promo}, qui offre {promo_pct} % de "
            "réduction et reste valable 15 jours.",
            "Voici les conditions du code {promo} :\n"
            "- réduction : {promo_pct} %\n"
            "- montant minimum : {promo_min}\n"
            "- validité : jusqu'au {promo_end}\n"
            "- un seul usage par compte\n"
            "Si votre panier remplit ces conditions, saisissez le code dans le champ « Code avantage » juste "
            "avant le paiement.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Est-ce que je peux cumuler ce code avec un autre ?",
                    "Peut-on utiliser deux codes promo sur la même commande ?",
                    "Ce code est-il cumulable avec les soldes ?",
                ),
                answers=(
                    "Non, un seul code de réduction peut être utilisé par commande. Le système retient "
                    "automatiquement le dernier code saisi.",
                    "Les codes promo ne sont pas cumulables entre eux ni avec les articles déjà soldés. En "
                    "revanche, la livraison standard reste offerte dès 49 € d'achat.",
                ),
            ),
            FollowUp(
                users=(
                    "J'ai déjà validé ma commande sans le code, pouvez-vous l'appliquer après coup ?",
                    "Ma commande est déjà payée, est-il trop tard pour profiter de la réduction ?",
                    "Est-il possible de me rembourser la différence, puisque j'ai payé sans le code ?",
                ),
                answers=(
                    "Exceptionnellement, oui : je vous rembourse la différence de {promo_pct} % sur votre "
                    "{payment_method} d'ici 5 jours ouvrés. Vous recevrez une confirmation par e-mail.",
                    "Le code ne peut plus être appliqué à une commande déjà réglée, mais je vous ai crédité un "
                    "bon d'achat de {voucher}, utilisable sur votre prochaine commande.",
                ),
            ),
        ),
    ),
    Intent(
        name="warranty",
        need="order",
        openings=(
            "Bonjour, {mon_product} ne fonctionne plus après quelques mois. Puis-je faire jouer la garantie ?",
            "Bonjour, comment faire une demande de garantie pour la commande {order} ? L'appareil est tombé "
            "en panne.",
            "Combien de temps dure la garantie ? J'ai un souci avec {mon_product} qui fait un bruit anormal.",
            "Bonjour, {le_product} de ma commande {order} s'éteint sans raison. Est-ce couvert par la "
            "garantie ?",
            "Bonjour, l'appareil acheté le {purchase_date} est en panne, que couvre la garantie ?",
            "Je souhaite faire jouer la garantie pour la commande {order}, l'appareil ne démarre plus.",
            "Bonjour, {mon_product} ne marche plus du tout après huit mois d'utilisation. Est-ce encore "
            "couvert par la garantie ?",
            "Bonjour, je voudrais faire réparer {le_product} de la commande {order} dans le cadre de la "
            "garantie.",
            "L'appareil de ma commande {order} a cessé de fonctionner du jour au lendemain, la garantie "
            "s'applique-t-elle ?",
            "Bonsoir, l'appareil que je vous ai acheté il y a un an surchauffe anormalement. Puis-je "
            "bénéficier de la garantie ?",
            "Bonjour, pour la commande {order}, l'appareil fait des étincelles quand je le branche. Comment "
            "faire une réclamation sous garantie ?",
            "Bonjour, est-ce que vous prenez en charge la réparation ou l'échange de {mon_product}, qui est "
            "en panne depuis la semaine dernière ?",
            # eval
            "Bonjour, {mon_product} a un dysfonctionnement depuis hier, je souhaite déposer une demande de "
            "prise en charge sous garantie pour la commande {order}.",
            "Bonjour, mon appareil ne s'allume plus après un an et demi, ai-je droit à un échange ou une "
            "réparation gratuite ?",
            "Bonsoir, j'ai une panne sur {mon_product}, la garantie peut-elle s'appliquer ?",
            "Bonjour, l'article de la commande {order} présente un défaut de fonctionnement depuis peu. "
            "Quelle est la procédure de garantie ?",
        ),
        answers=(
            "Tous nos appareils bénéficient de la garantie légale de conformité de 2 ans. Votre commande "
            "{order} du {purchase_date} est donc couverte jusqu'au {warranty_end}. J'ai ouvert le dossier "
            "{ticket} : vous recevrez une étiquette de retour gratuite, et l'appareil sera réparé ou "
            "remplacé sous 15 jours après réception.",
            "Bonne nouvelle : {votre_product} (commande {order}) est encore sous garantie jusqu'au "
            "{warranty_end}. Voici la procédure :\n"
            "1. Déposez l'appareil avec l'étiquette prépayée que je viens de vous envoyer.\n"
            "2. Notre atelier établit un diagnostic sous 5 jours ouvrés.\n"
            "3. L'appareil est réparé ou remplacé gratuitement ; à défaut, nous vous remboursons {price}.",
            "La garantie s'applique bien : la commande {order} date du {purchase_date} et la garantie court "
            "jusqu'au {warranty_end}. Comme il s'agit d'une panne, je vous propose un échange contre un "
            "appareil neuf, expédié dès réception de l'ancien. Le numéro de dossier est {ticket}.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Combien de temps va durer la réparation ?",
                    "Dans combien de temps vais-je récupérer l'appareil ?",
                    "Quel est le délai pour la réparation ou l'échange ?",
                ),
                answers=(
                    "Comptez environ 10 jours ouvrés au total : 2 à 3 jours de transport, 5 jours de "
                    "diagnostic et de réparation, puis le retour chez vous. Vous recevrez un e-mail à chaque "
                    "étape du dossier {ticket}.",
                    "En général, l'appareil vous est renvoyé sous 15 jours après sa réception par notre "
                    "atelier. Vous pouvez suivre l'avancement du dossier {ticket} depuis votre espace client.",
                ),
            ),
            FollowUp(
                users=(
                    "La garantie couvre-t-elle aussi les chutes ou la casse ?",
                    "Et si l'appareil est tombé, est-ce couvert ?",
                    "Les dommages accidentels sont-ils pris en charge ?",
                ),
                answers=(
                    "La garantie légale couvre les défauts de fabrication et les pannes, mais pas les "
                    "dommages accidentels comme une chute ou un contact avec un liquide. Dans ce cas, nous "
                    "pouvons vous proposer un devis de réparation.",
                    "Non, la casse accidentelle n'est pas couverte par la garantie. Si notre atelier constate "
                    "un dommage de ce type, il vous enverra un devis avant toute intervention ; vous serez "
                    "libre de l'accepter ou non.",
                ),
            ),
        ),
    ),
    Intent(
        name="product_availability",
        need=None,
        openings=(
            "Bonjour, est-ce que {le_product} est disponible en stock ?",
            "Bonjour, {le_product} est indiqué en rupture de stock, quand prévoyez-vous un réassort ?",
            "Je voudrais acheter {un_product}, mais le site affiche « indisponible ». Est-ce que cela va "
            "revenir ?",
            "Bonjour, avez-vous encore du stock pour {le_product} ? J'aimerais en commander deux.",
            "Est-ce que vous allez réapprovisionner {le_product} bientôt ?",
            "Bonjour, pouvez-vous me prévenir quand {le_product} sera de nouveau en vente ?",
            "Bonjour, avez-vous une date de retour en stock pour {le_product} ?",
            "Bonjour, je ne parviens pas à ajouter {le_product} au panier, le bouton est grisé. Est-ce "
            "épuisé ?",
            "Vous reste-t-il des exemplaires {du_product} ? Je souhaiterais l'offrir pour un anniversaire.",
            "Bonsoir, est-il possible de recevoir un e-mail dès qu'il y aura du réassort pour {le_product} ?",
            "Bonjour, le produit « {product} » est-il encore commercialisé ? Je ne le trouve plus sur le "
            "site.",
            "Bonjour, j'aimerais commander trois exemplaires {du_product}, avez-vous la quantité en stock ?",
            # eval
            "Bonjour, la fiche {du_product} indique « épuisé ». Un nouvel arrivage est-il prévu "
            "prochainement ?",
            "Bonsoir, je souhaite acquérir {un_product}, pouvez-vous me dire s'il en reste dans votre "
            "entrepôt ?",
            "Bonsoir, {le_product} apparaît en rupture, savez-vous quand il y en aura à nouveau ?",
            "Bonjour, je cherche {un_product} mais la fiche produit indique « bientôt disponible ». Avez-vous "
            "une date ?",
        ),
        answers=(
            "{Le_product} est momentanément en rupture de stock. Le prochain réapprovisionnement est prévu "
            "pour le {restock_date}, au prix de {price}. Vous pouvez cliquer sur « M'alerter » sur la fiche "
            "produit pour recevoir un e-mail dès son retour.",
            "{Le_product} n'est plus disponible pour le moment, mais une nouvelle livraison est attendue "
            "dans notre entrepôt le {restock_date}. Je peux vous inscrire à l'alerte de disponibilité : vous "
            "recevrez un e-mail dès que l'article sera de nouveau en vente, au prix de {price}.",
            "D'après notre fournisseur, le réassort {du_product} arrivera le {restock_date}. En attendant, "
            "je vous suggère {le_product_b}, disponible immédiatement à {price_b}.",
            "Pour l'instant, {le_product} est en rupture. Voici ce que je peux vous proposer :\n"
            "1. Une alerte e-mail dès son retour en stock, prévu le {restock_date}.\n"
            "2. Une précommande dès maintenant, au prix de {price}, débitée seulement à l'expédition.\n"
            "3. Un autre modèle disponible tout de suite : {le_product_b} ({price_b}).",
        ),
        followups=(
            FollowUp(
                users=(
                    "Est-il possible de passer une précommande ?",
                    "Puis-je réserver l'article dès maintenant ?",
                    "Est-ce qu'une réservation est possible en attendant le réassort ?",
                ),
                answers=(
                    "Oui, la précommande est ouverte : vous réglez {price} maintenant et l'article vous est "
                    "expédié en priorité dès le {restock_date}. Vous pouvez annuler sans frais jusqu'à "
                    "l'expédition.",
                    "Tout à fait. En précommandant, vous réservez l'un des premiers exemplaires du réassort "
                    "du {restock_date} ; le paiement de {price} n'est débité qu'au moment de l'expédition.",
                ),
            ),
            FollowUp(
                users=(
                    "Pouvez-vous m'inscrire à l'alerte de disponibilité ?",
                    "Merci de me prévenir par e-mail quand l'article sera disponible.",
                    "Je veux bien recevoir une alerte lors du retour en stock.",
                ),
                answers=(
                    "C'est fait : vous recevrez un e-mail dès que l'article sera de nouveau disponible, "
                    "normalement autour du {restock_date}.",
                    "Votre inscription à l'alerte est confirmée. Un e-mail vous sera envoyé dès le retour en "
                    "stock, prévu le {restock_date}.",
                ),
            ),
        ),
    ),
    Intent(
        name="account_deletion",
        need="email",
        openings=(
            "Bonjour, je souhaite supprimer mon compte et toutes mes données personnelles.",
            "Conformément au RGPD, je demande l'effacement de mes données. Comment procéder ?",
            "Bonjour, comment fermer définitivement mon compte client ?",
            "Je ne veux plus recevoir vos e-mails et je souhaite que mon compte soit supprimé.",
            "Bonjour, pouvez-vous supprimer le compte associé à l'adresse {email} ?",
            "Bonjour, j'aimerais que vous supprimiez toutes les données que vous conservez sur moi, puis "
            "que vous fermiez mon compte.",
            "Bonjour, je ne compte plus commander chez vous, merci de supprimer mon compte {email}.",
            "Comment puis-je effacer définitivement mon profil client et l'historique de mes commandes ?",
            "Bonjour, je demande la suppression de toutes les données liées à l'adresse {email}, "
            "conformément à la loi.",
            "Bonsoir, je veux que mon compte Opaline disparaisse complètement, comment faire ?",
            "Bonjour, pouvez-vous désactiver et supprimer l'espace client rattaché à {email} ? Je n'en ai "
            "plus l'usage.",
            "Bonjour, où se trouve l'option pour supprimer son compte ? Je ne la trouve nulle part dans les "
            "paramètres.",
            # eval
            "Bonjour, pouvez-vous fermer pour de bon le compte dont l'identifiant est {email} ? Je ne veux "
            "plus rien avoir à faire avec votre boutique.",
            "Bonsoir, merci d'effacer mes coordonnées de vos fichiers et de désactiver mon accès client pour "
            "toujours.",
            "Bonsoir, je voudrais exercer mon droit à l'effacement et clôturer mon compte Opaline.",
            "Bonjour, merci de supprimer définitivement mon compte ({email}) ainsi que mes informations.",
        ),
        answers=(
            "J'ai bien enregistré votre demande de suppression du compte associé à {email} (référence "
            "{ticket}). Conformément au RGPD, vos données personnelles seront effacées sous 30 jours. Seules "
            "les factures sont conservées 10 ans, car la loi nous y oblige. Vous recevrez une confirmation "
            "par e-mail.",
            "Votre demande d'effacement est prise en compte. Voici les prochaines étapes :\n"
            "1. Un e-mail de confirmation est envoyé à {email} : cliquez sur le lien pour valider la "
            "demande.\n"
            "2. Le compte est désactivé dès la validation.\n"
            "3. Vos données sont supprimées définitivement sous 30 jours, à l'exception des factures que "
            "nous devons conserver légalement.",
            "C'est noté. J'ai lancé la procédure de suppression du compte {email} sous la référence "
            "{ticket}. Votre adresse est retirée de toutes nos listes d'envoi dès aujourd'hui, et "
            "l'ensemble de vos données sera effacé d'ici le {deletion_date}.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Que se passe-t-il si j'ai une commande en cours ?",
                    "J'ai encore un colis en attente, est-ce un problème ?",
                    "Mes commandes en cours seront-elles quand même livrées ?",
                ),
                answers=(
                    "Vos commandes en cours seront livrées normalement : la suppression définitive "
                    "n'intervient qu'une fois toutes les commandes livrées et le délai de retour écoulé.",
                    "Pas d'inquiétude : nous attendons la livraison de vos commandes en cours et la fin du "
                    "délai de rétractation avant d'effacer vos données.",
                ),
            ),
            FollowUp(
                users=(
                    "Et mes points de fidélité, je les perds ?",
                    "Que deviennent mes points de fidélité et mes bons d'achat ?",
                    "Vais-je perdre mon bon d'achat si le compte est supprimé ?",
                ),
                answers=(
                    "Oui, les points de fidélité et les bons d'achat sont liés au compte et seront perdus à "
                    "la suppression. Si vous le souhaitez, vous pouvez encore les utiliser avant le "
                    "{deletion_date}.",
                    "Malheureusement, les avantages attachés au compte disparaissent avec lui. Je vous "
                    "conseille d'utiliser votre bon d'achat de {voucher} avant la suppression effective, "
                    "prévue le {deletion_date}.",
                ),
            ),
        ),
    ),
    Intent(
        name="delivery_options",
        need=None,
        openings=(
            "Bonjour, quels sont vos modes de livraison et leurs tarifs ?",
            "Bonjour, livrez-vous en point relais ?",
            "Quel est le délai de livraison pour {city} ?",
            "Bonjour, proposez-vous une livraison express ?",
            "Bonjour, à partir de quel montant la livraison est-elle gratuite ?",
            "Si je commande {un_product} aujourd'hui, quand la livraison aura-t-elle lieu ?",
            "Bonjour, combien coûte la livraison à domicile ?",
            "Bonjour, est-il possible d'avoir une livraison le lendemain si je commande ce matin ?",
            "Quels transporteurs utilisez-vous, et peut-on choisir entre domicile et point relais ?",
            "Bonsoir, pour une commande de {price}, les frais de port sont-ils offerts ?",
            "Bonjour, j'habite à {city} : en combien de temps recevrai-je un colis envoyé en livraison "
            "standard ?",
            "Bonjour, avant de commander {un_product}, j'aimerais connaître les frais d'expédition et les "
            "délais.",
            # eval
            "Bonjour, quelle différence de prix et de délai y a-t-il entre l'envoi express et l'envoi "
            "classique ?",
            "Bonsoir, je voudrais savoir combien de temps met un colis pour arriver et s'il est possible de "
            "le récupérer en relais.",
            "Bonsoir, quelles options de livraison proposez-vous pour une adresse à {city} ?",
            "Bonjour, pouvez-vous me détailler les différentes formules de livraison ?",
        ),
        answers=(
            "Voici nos options de livraison en France métropolitaine :\n"
            "- point relais : {relay_price}, en 3 à 4 jours ouvrés ;\n"
            "- domicile standard : {home_price}, en 2 à 3 jours ouvrés ;\n"
            "- express : {express_price}, livraison le lendemain pour toute commande passée avant {cutoff}.\n"
            "La livraison standard est offerte dès 49 € d'achat.",
            "Nous proposons trois formules : le point relais à {relay_price} (3 à 4 jours ouvrés), la "
            "livraison à domicile avec {carrier} à {home_price} (2 à 3 jours ouvrés) et l'express à "
            "{express_price}, livré le lendemain si vous commandez avant {cutoff}. À partir de 49 € d'achat, "
            "le point relais et la livraison standard sont gratuits.",
            "Pour une commande passée aujourd'hui, la livraison standard à domicile ({home_price}) "
            "arriverait le {eta}, et la livraison express ({express_price}) dès demain si vous validez avant "
            "{cutoff}. Le retrait en point relais coûte {relay_price}, et la livraison est offerte dès 49 € "
            "d'achat.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Livrez-vous aussi en Belgique et en Suisse ?",
                    "Est-ce que vous expédiez à l'étranger ?",
                    "Puis-je me faire livrer hors de France ?",
                ),
                answers=(
                    "Oui, nous livrons en Belgique, au Luxembourg et en Suisse, en 4 à 6 jours ouvrés, pour "
                    "{intl_price}. Pour la Suisse, des droits de douane peuvent s'appliquer à la réception.",
                    "Nous livrons dans toute l'Union européenne et en Suisse, en 4 à 7 jours ouvrés. Les "
                    "frais sont calculés dans le panier selon le pays, à partir de {intl_price}.",
                ),
            ),
            FollowUp(
                users=(
                    "Peut-on choisir un créneau horaire pour la livraison ?",
                    "Est-il possible de choisir le jour de livraison ?",
                    "Le livreur prévient-il avant de passer ?",
                ),
                answers=(
                    "Oui, pour la livraison à domicile, {carrier} vous envoie la veille un SMS avec un "
                    "créneau d'une heure, que vous pouvez modifier ou reporter depuis le lien reçu.",
                    "Avec la livraison à domicile, vous recevez un SMS le matin de la livraison avec un "
                    "créneau de 2 heures. Le lien du SMS permet de choisir un autre jour ou de faire déposer "
                    "le colis en point relais.",
                ),
            ),
        ),
    ),
    Intent(
        name="order_cancellation",
        need="order",
        openings=(
            "Bonjour, je souhaite annuler ma commande {order}.",
            "Bonjour, j'ai passé une commande par erreur il y a une heure, pouvez-vous l'annuler ?",
            "Est-il encore possible d'annuler la commande {order} ? Je n'en ai plus besoin.",
            "Bonjour, j'ai commandé deux fois le même article par erreur, pourriez-vous annuler l'une des "
            "deux commandes ?",
            "Bonjour, je voudrais annuler la commande de {mon_product}, j'ai trouvé moins cher ailleurs.",
            "Pouvez-vous annuler la commande {order} avant qu'elle ne soit expédiée ?",
            "Bonjour, merci de stopper la commande {order}, j'ai choisi le mauvais modèle.",
            "Bonjour, je viens de commander {un_product} mais finalement je n'en veux plus. Pouvez-vous "
            "annuler avant l'envoi ?",
            "Est-ce trop tard pour annuler la commande {order} passée ce matin ?",
            "Bonsoir, je voudrais renoncer à ma commande de {price} avant qu'elle parte de l'entrepôt.",
            "Bonjour, pour des raisons budgétaires, je dois annuler la commande {order}. Merci de faire le "
            "nécessaire.",
            "Bonjour, comment annuler une commande que je viens de valider ? Je ne vois pas de bouton pour "
            "le faire.",
            # eval
            "Bonjour, pourriez-vous bloquer l'envoi de la commande {order} et l'annuler ? Je ne la veux "
            "plus.",
            "Bonjour, ma commande d'hier n'est sûrement pas encore préparée : pouvez-vous l'annuler purement "
            "et simplement ?",
            "Bonsoir, j'ai changé d'avis, merci d'annuler ma commande {order}.",
            "Bonjour, je souhaiterais annuler ma dernière commande, est-ce encore faisable ?",
        ),
        answers=(
            "C'est fait : la commande {order} n'était pas encore expédiée et elle est bien annulée. Le "
            "remboursement de {price} sera effectué sur votre {payment_method} sous 3 à 5 jours ouvrés. Vous "
            "allez recevoir un e-mail de confirmation.",
            "J'ai pu intercepter la commande {order} juste avant sa préparation : elle est annulée. Le "
            "montant de {price} vous sera reversé d'ici le {refund_date}.",
            "La commande {order} a malheureusement déjà été remise à {carrier}, je ne peux donc plus "
            "l'annuler. Voici comment procéder :\n"
            "1. Refusez le colis à la livraison, ou ne le retirez pas en point relais.\n"
            "2. Il nous reviendra automatiquement.\n"
            "3. Dès son retour, nous vous rembourserons {price}, frais de livraison inclus.",
        ),
        followups=(
            FollowUp(
                users=(
                    "Quand vais-je voir le remboursement sur mon compte ?",
                    "Dans combien de temps l'argent sera-t-il reversé ?",
                    "Le remboursement prendra combien de temps ?",
                ),
                answers=(
                    "Le remboursement de {price} apparaîtra sur votre compte sous 3 à 5 jours ouvrés, selon "
                    "les délais de traitement de votre banque.",
                    "Comptez jusqu'au {refund_date} au plus tard. Si le montant de {price} n'est pas visible "
                    "à cette date, revenez vers nous avec la référence {order}.",
                ),
            ),
            FollowUp(
                users=(
                    "J'avais utilisé un code promo sur cette commande, est-ce que je le récupère ?",
                    "Mon code de réduction sera-t-il réactivé après l'annulation ?",
                    "Est-ce que je peux réutiliser le code promo de cette commande ?",
                ),
                answers=(
                    "Oui, le code utilisé sur la commande {order} est réactivé automatiquement après "
                    "l'annulation. Vous pourrez l'utiliser sur une nouvelle commande jusqu'à sa date "
                    "d'expiration.",
                    "Le code de réduction est bien recrédité sur votre compte : il apparaîtra dans la "
                    "rubrique « Mes avantages » d'ici une heure.",
                ),
            ),
        ),
    ),
)

INTENT_NAMES: tuple[str, ...] = tuple(intent.name for intent in INTENTS)


# --------------------------------------------------------------------------------------
# The held-out partition.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitPools:
    """Everything one split may draw from: its share of user phrasings and slot values."""

    openings: dict[str, list[str]]
    followup_users: dict[str, list[list[str]]]
    give: dict[str, list[str]]
    give_order: list[str]
    give_email: list[str]
    thanks: list[str]
    slots: dict[str, list[Any]]
    invented_first_names: list[str]
    framed: bool  # whether openings may be drawn from FRAMES x TOPICS (train only)


def _split_pools() -> dict[str, SplitPools]:
    """Partition every user-phrasing pool and every slot pool into train and eval parts."""
    parts: dict[str, dict[str, Any]] = {split: {} for split in SPLITS}

    def put(key: str, values: Sequence[Any]) -> None:
        train, held_out = split_pool(values)
        parts["train"][key] = train
        parts["eval"][key] = held_out

    put("give_order", GIVE_ORDER)
    put("give_email", GIVE_EMAIL)
    put("thanks", THANKS)
    for split in SPLITS:
        parts[split].update(openings={}, followup_users={}, give={}, slots={})
    for intent in INTENTS:
        train, held_out = split_pool(intent.openings)
        parts["train"]["openings"][intent.name] = train
        parts["eval"]["openings"][intent.name] = held_out
        for split in SPLITS:
            parts[split]["followup_users"][intent.name] = []
        for followup in intent.followups:
            train, held_out = split_pool(followup.users)
            parts["train"]["followup_users"][intent.name].append(train)
            parts["eval"]["followup_users"][intent.name].append(held_out)
        if intent.give:
            train, held_out = split_pool(intent.give)
            parts["train"]["give"][intent.name] = train
            parts["eval"]["give"][intent.name] = held_out
    for name, values in SLOT_POOLS.items():
        train, held_out = split_pool(values)
        parts["train"]["slots"][name] = train
        parts["eval"]["slots"][name] = held_out
    eval_values = [_slot_text(value) for values in parts["eval"]["slots"].values() for value in values]
    parts["train"]["invented_first_names"] = invent_first_names(
        parts["train"]["slots"]["first_name"], eval_values, INVENTED_NAMES
    )
    parts["eval"]["invented_first_names"] = []
    parts["train"]["framed"], parts["eval"]["framed"] = True, False
    return {split: SplitPools(**parts[split]) for split in SPLITS}


POOLS = _split_pools()


def _user_templates(pools: SplitPools) -> list[str]:
    templates = [*pools.give_order, *pools.give_email, *pools.thanks]
    if pools.framed:
        templates += [
            frame.replace("{topic}", topic)
            for frame in FRAMES
            for name in INTENT_NAMES
            for topic in TOPICS[name]
        ]
    for name in INTENT_NAMES:
        templates += pools.openings[name]
        for users in pools.followup_users[name]:
            templates += users
        templates += pools.give.get(name, [])
    return templates


def user_template_partition() -> dict[str, list[str]]:
    """Every user phrasing template, by the split allowed to use it (the two lists are disjoint)."""
    return {split: _user_templates(POOLS[split]) for split in SPLITS}


def slot_value_partition() -> dict[str, dict[str, list[str]]]:
    """Slot values as they appear in text, per pool, by split: `{"product": {"train": [...], "eval": [...]}}`.

    Numeric identifiers (order numbers, dates, amounts) are random and not listed here.
    """
    return {
        name: {split: [_slot_text(value) for value in POOLS[split].slots[name]] for split in SPLITS}
        for name in SLOT_POOLS
    }


# --------------------------------------------------------------------------------------
# Slot filling.
# --------------------------------------------------------------------------------------

MONTHS = [
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
]  # fmt: skip
WEEKDAYS = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
FIRST_DAY = dt.date(2024, 1, 8)
DAY_SPAN = 540  # "today" falls within about eighteen months from FIRST_DAY
VOWELS = "aeiouyàâéèêëîïôûh"  # every product starting with "h" has a mute h


def french_date(day: dt.date, year: bool = False) -> str:
    """`mardi 12 mars` for dates close to the conversation, `12 mars 2024` for distant ones."""
    number = "1er" if day.day == 1 else str(day.day)
    if year:
        return f"{number} {MONTHS[day.month - 1]} {day.year}"
    return f"{WEEKDAYS[day.weekday()]} {number} {MONTHS[day.month - 1]}"


def euros(cents: int) -> str:
    """French money format: `89,90 €`, or `10 €` for whole amounts."""
    if cents % 100 == 0:
        return f"{cents // 100} €"
    return f"{cents // 100},{cents % 100:02d} €"


def _ascii_lower(text: str) -> str:
    """`Émilie` -> `emilie`, for e-mail addresses."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace(" ", "")


def _product_forms(name: str, gender: str, suffix: str = "") -> dict[str, str]:
    """Articles agreed with the product: `le casque ...`, `la bouilloire ...`, `l'aspirateur ...`."""
    elided = name[0] in VOWELS
    masculine = gender == "m"
    le = "l'" if elided else ("le " if masculine else "la ")
    du = "de l'" if elided else ("du " if masculine else "de la ")
    forms = {
        "product": name,
        "un_product": ("un " if masculine else "une ") + name,
        "le_product": le + name,
        "du_product": du + name,
        "mon_product": ("mon " if masculine or elided else "ma ") + name,
        "votre_product": "votre " + name,
    }
    forms["Le_product"] = forms["le_product"][0].upper() + forms["le_product"][1:]
    return {key + suffix: value for key, value in forms.items()}


def _workday(day: dt.date) -> dt.date:
    """Move a Sunday to Monday: parcels and bank transfers do not move on Sundays."""
    return day + dt.timedelta(days=1) if day.weekday() == 6 else day


def _add_years(day: dt.date, years: int) -> dt.date:
    """Same calendar day `years` later (29 February becomes 28 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _context(rng: random.Random, pools: SplitPools) -> dict[str, str]:
    """Draw every slot a template may use, from this split's pools, coherent within one conversation."""
    slots = pools.slots
    invented = pools.invented_first_names and rng.random() < INVENTED_NAME_SHARE
    first_name = rng.choice(pools.invented_first_names if invented else slots["first_name"])
    last_name = rng.choice(slots["last_name"])
    city, postcode = rng.choice(slots["city"])
    product = rng.choice(slots["product"])
    product_b = rng.choice([p for p in slots["product"] if p[3] == product[3] and p != product])
    plan, plan_price = rng.choice(slots["plan"])
    promo = rng.choice(slots["promo"])
    payment_method = rng.choice(slots["payment_method"])
    today = FIRST_DAY + dt.timedelta(days=rng.randrange(DAY_SPAN))

    def days(lo: int, hi: int) -> dt.date:
        return today + dt.timedelta(days=rng.randint(lo, hi))

    order_date = days(-12, -4)
    ship_date = _workday(order_date + dt.timedelta(days=rng.randint(1, 2)))
    eta = _workday(ship_date + dt.timedelta(days=rng.randint(2, 4)))
    renewal = days(3, 25)
    purchase = days(-600, -60)
    email_sep = rng.choice([".", "_", ""])
    ctx = {
        "first_name": first_name,
        "last_name": last_name,
        "email": f"{_ascii_lower(first_name)}{email_sep}{_ascii_lower(last_name)}@{rng.choice(EMAIL_DOMAINS)}",
        "city": city,
        "new_address": f"{rng.randint(1, 120)} {rng.choice(slots['street'])}, {postcode} {city}",
        "price": euros(product[2]),
        "price_b": euros(product_b[2]),
        "carrier": rng.choice(slots["carrier"]),
        "payment_method": payment_method,
        "mon_payment_method": ("ma " if payment_method.startswith("carte") else "mon ") + payment_method,
        "plan": plan,
        "plan_price": euros(plan_price),
        "promo": promo,
        "promo_pct": promo[len(promo.rstrip("0123456789")) :],
        "promo_min": euros(rng.choice([3000, 4000, 5000, 6000, 8000])),
        "promo_end": french_date(days(-20, 40)),
        "new_promo": f"GESTE-{_digits(rng, 4)}",
        "order": f"CMD-{rng.randint(100000, 999999)}",
        "order_date": french_date(order_date),
        "ship_date": french_date(ship_date),
        "eta": french_date(eta),
        "new_eta": french_date(_workday(days(2, 6))),
        "days_late": str(rng.randint(3, 9)),
        "tracking": f"{rng.choice(['6A', '8R', 'XY', 'JD'])}{_digits(rng, 11)}",
        "ticket": f"SAV-{_digits(rng, 6)}",
        "invoice": f"FA-{order_date.year}-{_digits(rng, 6)}",
        "return_code": _digits(rng, 8),
        "refund_date": french_date(_workday(days(4, 9))),
        "return_deadline": french_date(days(14, 30)),
        "renewal_date": french_date(renewal),
        "end_date": french_date(renewal - dt.timedelta(days=1)),
        "purchase_date": french_date(purchase, year=True),
        "warranty_end": french_date(_add_years(purchase, 2), year=True),
        "restock_date": french_date(_workday(days(7, 30))),
        "deletion_date": french_date(days(30, 30)),
        "shipping_fee": euros(rng.choice([490, 590, 690])),
        "voucher": euros(rng.choice([1000, 1500, 2000])),
        "relay_price": euros(rng.choice([390, 450])),
        "home_price": euros(rng.choice([590, 690])),
        "express_price": euros(rng.choice([1290, 1490])),
        "intl_price": euros(rng.choice([990, 1290])),
        "cutoff": rng.choice(["13 h", "14 h", "15 h"]),
    }
    ctx.update(_product_forms(product[0], product[1]))
    ctx.update(_product_forms(product_b[0], product_b[1], suffix="_b"))
    return ctx


# --------------------------------------------------------------------------------------
# Conversations.
# --------------------------------------------------------------------------------------


def _fill(template: str, ctx: dict[str, str]) -> str:
    text = template.format(**ctx)
    if not text or text != text.strip() or "{" in text or "}" in text:
        raise ValueError(f"bad message from template {template!r}: {text!r}")
    return text


def _conversation(rng: random.Random, intent: Intent, pools: SplitPools) -> list[dict[str, str]]:
    """One chat: system prompt, opening, optional identifier request, follow-up and thanks."""
    ctx = _context(rng, pools)
    named = rng.random() < 0.6
    system = rng.choice(SYSTEM_PROMPTS)
    if named:
        system += "\n\n" + rng.choice(CUSTOMER_CONTEXTS)
    greeting = rng.choice(GREETINGS_NAMED if named else GREETINGS_PLAIN)
    if pools.framed and rng.random() < FRAMED_OPENING_SHARE:
        opening = rng.choice(FRAMES).replace("{topic}", rng.choice(TOPICS[intent.name]))
    else:
        opening = rng.choice(pools.openings[intent.name])
    if opening.startswith("Bonsoir"):
        greeting = greeting.replace("Bonjour", "Bonsoir", 1)
    answer = rng.choice(intent.answers)

    exchanges: list[tuple[str, str]] = []
    if intent.need is not None and "{" + intent.need + "}" not in opening:
        if intent.need == "order":
            ask_pool, give_pool = intent.ask or ASK_ORDER, pools.give.get(intent.name) or pools.give_order
        else:
            ask_pool = intent.ask or (ASK_EMAIL_CONFIRM if named else ASK_EMAIL)
            give_pool = pools.give.get(intent.name) or pools.give_email
        acknowledgement = rng.choice(ACKNOWLEDGEMENTS[intent.name])
        exchanges.append((opening, f"{greeting} {acknowledgement} {rng.choice(ask_pool)}"))
        exchanges.append((rng.choice(give_pool), f"{RECAPS[intent.name]} {answer}"))
        target = rng.choice((2, 2, 3))
    else:
        exchanges.append((opening, f"{greeting} {ACKNOWLEDGEMENTS[intent.name][0]} {answer}"))
        target = rng.choices((1, 2, 3), weights=(4, 4, 3))[0]

    extra = target - len(exchanges)
    if extra == 2 or (extra == 1 and rng.random() < 0.5):
        index = rng.randrange(len(intent.followups))
        users = pools.followup_users[intent.name][index]
        exchanges.append((rng.choice(users), rng.choice(intent.followups[index].answers)))
        extra -= 1
    if extra == 1:
        closing = rng.choice(CLOSINGS_NAMED if named else CLOSINGS_PLAIN)
        exchanges.append((rng.choice(pools.thanks), closing))

    messages = [{"role": "system", "content": _fill(system, ctx)}]
    for user, assistant in exchanges:
        messages.append({"role": "user", "content": _fill(user, ctx)})
        messages.append({"role": "assistant", "content": _fill(assistant, ctx)})
    return messages


def _split(rng: random.Random, split: str, n: int) -> list[dict[str, Any]]:
    """`n` conversations, intents balanced: each intent appears n // len(INTENTS) times or one more."""
    order = [INTENTS[i % len(INTENTS)] for i in range(n)]
    rng.shuffle(order)
    pools = POOLS[split]
    return [
        {"id": f"{split}-{i:05d}", "intent": intent.name, "messages": _conversation(rng, intent, pools)}
        for i, intent in enumerate(order)
    ]


def generate(seed: int = 0, n_train: int = 2400, n_eval: int = 240) -> tuple[list[dict], list[dict]]:
    """Build (train, eval) rows. Each split has its own generator derived from `seed`, so the
    eval split does not change when only the train size does."""
    root = random.Random(seed)
    train_rng = random.Random(root.getrandbits(64))
    eval_rng = random.Random(root.getrandbits(64))
    return _split(train_rng, "train", n_train), _split(eval_rng, "eval", n_eval)


# --------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _readme(seed: int, train: list[dict], evaluation: list[dict]) -> str:
    counts = {
        split: Counter(row["intent"] for row in rows)
        for split, rows in zip(SPLITS, (train, evaluation), strict=True)
    }
    lines = [
        "# support-fr: synthetic French customer-support conversations",
        "",
        "Chats between customers and the support agent of « Opaline », a fictional online shop selling",
        "home appliances and a subscription. Each row is a system prompt followed by one to three",
        "user/assistant exchanges in French (polite « vous »), ending on the assistant. Everything is",
        "synthetic: names, addresses, order numbers, amounts and codes are invented.",
        "",
        "Generated by `scripts/make_support_fr.py` (standard library only, deterministic). Regenerate",
        "from the repository root with:",
        "",
        "    "
        + REGENERATE_COMMAND.format(seed=seed, n_train=len(train), n_eval=len(evaluation))
        + " --out trainer/assets/support-fr",
        "",
        "## Files",
        "",
        f"- `train.jsonl`: {len(train)} conversations",
        f"- `eval.jsonl`: {len(evaluation)} conversations",
        "",
        'One JSON object per line: `{"id", "intent", "messages": [{"role", "content"}, ...]}`, roles',
        "`system`, `user`, `assistant`.",
        "",
        "## Held-out eval",
        "",
        "The eval split is held out by construction: every pool of user phrasings (openings, follow-up",
        "questions, replies giving an order number or e-mail, thanks) and every pool of slot values",
        "(first and last names, cities, streets, products, carriers, promo codes, plans, payment",
        "methods) is partitioned, the last quarter of each list being reserved for eval. No eval user",
        "message, and none of those eval-only values, appears in train. Assistant answer templates are",
        "shared, since they are the behaviour being taught. Half the train conversations name an",
        "invented customer (the head of one listed first name and the tail of another, « So » +",
        "« thalie »), so a fine-tune learns to copy the name the system prompt gives, not a list.",
        f"{FRAMED_OPENING_SHARE:.0%} of the train openings are one of {len(FRAMES)} frames shared by every",
        "intent around a topic in that intent's words (« Bonjour, je vous contacte pour une étiquette",
        "retour. »), so only the topic tells the request; the eval split keeps its whole-sentence",
        "openings.",
        "",
        "## The agent's turns",
        "",
        "Every first agent turn greets, then names the request in one sentence shared by every intent",
        "but for the request's words (« Je m'occupe de votre facture. »), then answers. When the customer",
        "opens without the order number or e-mail the request needs, the agent asks for it instead, and",
        "its answer after the customer's reply opens by restating the request (« Merci. Voici pour votre",
        "facture. ») before carrying it out.",
        "",
        "## Intents",
        "",
        "| intent | train | eval |",
        "|---|---:|---:|",
    ]
    for name in INTENT_NAMES:
        lines.append(f"| {name} | {counts['train'][name]} | {counts['eval'][name]} |")
    lines.append(f"| **total** | {len(train)} | {len(evaluation)} |")
    return "\n".join(lines) + "\n"


def write(out: Path, seed: int, train: list[dict], evaluation: list[dict]) -> None:
    """Write the two splits and the README with `\\n` line ends, whatever the platform."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "train.jsonl": _jsonl(train),
        "eval.jsonl": _jsonl(evaluation),
        "README.md": _readme(seed, train, evaluation),
    }
    for name, text in files.items():
        with open(out / name, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--train", type=int, default=2400, help="train conversations (default 2400)")
    parser.add_argument("--eval", type=int, default=240, help="eval conversations (default 240)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    train, evaluation = generate(args.seed, args.train, args.eval)
    write(args.out, args.seed, train, evaluation)
    print(f"wrote {len(train)} train and {len(evaluation)} eval conversations to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
