"""Default synonyms (shopper words -> catalog words) and the vocabulary's trigram index.

Merchandisers edit the synonyms in the admin; these are common English shopping words, for
clothing and for the home, each with alternatives that catalogs commonly use. A synonym
whose catalog words a catalog lacks does nothing there.
"""

from django.db import migrations

DEFAULT_SYNONYMS = {
    # clothing types
    "tee": "t-shirt",
    "tees": "t-shirt",
    "tshirt": "t-shirt",
    "t shirt": "t-shirt",
    "jumper": "sweater|jumper",
    "pullover": "sweater",
    "sweatshirt": "sweater|sweatshirt",
    "jeans": "denim|jeans",
    "denims": "denim",
    "trainers": "sneakers|trainers",
    "sneaker": "sneakers",
    "kicks": "sneakers",
    "pants": "trousers|pants",
    "slacks": "trousers",
    "chinos": "trousers|chinos",
    "joggers": "trousers|joggers",
    "sweatpants": "trousers|joggers",
    "frock": "dress",
    "gown": "dress",
    "lbd": "dress",
    "tank": "vest top|tank top",
    "tank top": "vest top",
    "cami": "vest top",
    "hoody": "hoodie",
    "parka": "coat|jacket",
    "overcoat": "coat",
    "anorak": "jacket",
    "blazer jacket": "blazer",
    "heels": "heeled sandals|pumps|heels",
    "flats": "ballerinas|flat shoe",
    "sandal": "sandals",
    "beanie hat": "hat/beanie|beanie",
    "cap": "cap/peaked|cap",
    "bathing suit": "swimsuit",
    "swimming costume": "swimsuit",
    "bikini": "bikini top|swimwear bottom",
    "knickers": "underwear bottom",
    "briefs": "underwear bottom",
    "pyjamas": "pyjama set",
    "pajamas": "pyjama set",
    "tights": "leggings/tights|underwear tights",
    "onesie": "jumpsuit/playsuit|bodysuit",
    "playsuit": "jumpsuit/playsuit",
    "jumpsuit": "jumpsuit/playsuit",
    "purse": "bag|wallet",
    "handbag": "bag",
    # patterns
    "striped": "stripe",
    "stripes": "stripe",
    "stripy": "stripe",
    "stripey": "stripe",
    "checked": "check",
    "checks": "check",
    "checkered": "check",
    "plaid": "check",
    "tartan": "check",
    "polka dot": "dot",
    "polka dots": "dot",
    "spotted": "dot",
    "dotted": "dot",
    "floral": "all over pattern",
    "patterned": "all over pattern",
    "printed": "all over pattern|front print|placement print",
    "plain": "solid",
    "sparkly": "glittering/metallic|sequin",
    "glitter": "glittering/metallic",
    "lacy": "lace",
    # colours
    "navy": "dark blue|navy blue|navy",
    "navy blue": "dark blue|navy blue",
    "cream": "off white|light beige|cream",
    "ivory": "off white",
    "khaki": "greenish khaki|khaki green",
    "olive": "greenish khaki|khaki green|dark green",
    "burgundy": "dark red",
    "maroon": "dark red",
    "wine": "dark red",
    "tan": "yellowish brown|dark beige",
    "camel": "yellowish brown|beige",
    "brown": "brown|yellowish brown",
    "gray": "grey",
    "charcoal": "dark grey",
    "lilac": "light purple|lilac purple",
    "violet": "purple|lilac purple",
    "mauve": "light purple|lilac purple",
    "teal": "dark turquoise|turquoise",
    "mint": "light green",
    "coral": "light orange|dark pink",
    "blush": "light pink",
    "nude": "light beige|beige",
    "multicoloured": "colour blocking|all over pattern",
    # audiences
    "women": "ladieswear|women|womens",
    "womens": "ladieswear|women|womens",
    "woman": "ladieswear|women",
    "ladies": "ladieswear|women",
    "lady": "ladieswear|women",
    "men": "menswear|men|mens",
    "mens": "menswear|men|mens",
    "man": "menswear|men",
    "kids": "baby/children|kids|children",
    "children": "baby/children|children|kids",
    "childrens": "baby/children|children|kids",
    "baby": "baby/children|baby",
    "boys": "baby/children|boys",
    "girls": "baby/children|girls",
    "teen": "divided",
    "sporty": "sport",
    "gym": "sport",
    # home
    "couch": "sofa",
    "settee": "sofa",
    "wardrobe": "wardrobe|closet",
    "closet": "wardrobe",
    "bookcase": "bookshelf|bookcase",
    "nightstand": "bedside table",
    "bedside table": "nightstand|bedside table",
    "rug": "rug|carpet",
    "duvet": "quilt|duvet",
}


def seed(apps, schema_editor):
    Synonym = apps.get_model("search", "Synonym")
    for phrase, means in DEFAULT_SYNONYMS.items():
        Synonym.objects.get_or_create(phrase=phrase, defaults={"means": means})


def unseed(apps, schema_editor):
    Synonym = apps.get_model("search", "Synonym")
    Synonym.objects.filter(phrase__in=list(DEFAULT_SYNONYMS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0005_product_document"),
        ("search", "0006_synonyms_vocabulary_calibration"),
    ]

    operations = [
        migrations.RunPython(seed, unseed),
        migrations.RunSQL(
            "CREATE INDEX search_vocabularyterm_key_trgm ON search_vocabularyterm "
            "USING gin (key gin_trgm_ops)",
            "DROP INDEX IF EXISTS search_vocabularyterm_key_trgm",
        ),
    ]
