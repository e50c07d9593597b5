"""The synthetic catalog's taxonomy and the words its product names and descriptions are made of.

Each leaf category carries product nouns and feature adjectives, so the generated text says
what the item is: a leaf `Headphones` yields names such as "Sonaro Wireless Over-Ear Headphones".
That is what gives text encoders a real signal to find.
"""

from __future__ import annotations

import re

# top level -> mid level -> leaf -> (nouns, adjectives, base price)
TAXONOMY: dict[str, dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...], float]]]] = {
    "Electronics": {
        "Audio": {
            "Headphones": (
                ("Over-Ear Headphones", "On-Ear Headphones", "Headphones"),
                ("Wireless", "Bluetooth", "Noise Cancelling", "Studio", "Foldable"),
                89.0,
            ),
            "Earbuds": (
                ("Earbuds", "In-Ear Earphones", "True Wireless Earbuds"),
                ("Wireless", "Sport", "Waterproof", "Compact", "Bass Boost"),
                49.0,
            ),
            "Speakers": (
                ("Bluetooth Speaker", "Smart Speaker", "Soundbar"),
                ("Portable", "Waterproof", "Wireless", "Stereo", "Rugged"),
                69.0,
            ),
        },
        "WearableTechnology": {
            "SmartWatches": (
                ("Smart Watch", "Smartwatch", "GPS Watch"),
                ("AMOLED", "Fitness", "Waterproof", "Bluetooth Calling", "Slim"),
                129.0,
            ),
            "FitnessTrackers": (
                ("Fitness Tracker", "Activity Band", "Heart Rate Monitor"),
                ("Slim", "Waterproof", "Sleep Tracking", "Lightweight"),
                45.0,
            ),
        },
        "Computers": {
            "Laptops": (
                ("Laptop", "Notebook", "Ultrabook"),
                ("Thin", "Gaming", "14-inch", "Lightweight", "Business"),
                799.0,
            ),
            "Keyboards": (
                ("Mechanical Keyboard", "Wireless Keyboard", "Keyboard"),
                ("Backlit", "Ergonomic", "Compact", "Quiet", "RGB"),
                59.0,
            ),
            "Mice": (
                ("Wireless Mouse", "Gaming Mouse", "Ergonomic Mouse"),
                ("Silent", "Rechargeable", "High Precision", "Compact"),
                25.0,
            ),
        },
        "Cameras": {
            "DigitalCameras": (
                ("Mirrorless Camera", "Digital Camera", "Action Camera"),
                ("4K", "Compact", "Waterproof", "Full Frame"),
                549.0,
            ),
            "Lenses": (
                ("Zoom Lens", "Prime Lens", "Wide Angle Lens"),
                ("Fast", "Stabilized", "Lightweight", "Macro"),
                299.0,
            ),
        },
    },
    "Home&Kitchen": {
        "Kitchen": {
            "Knives": (
                ("Chef Knife", "Kitchen Knife Set", "Santoku Knife"),
                ("Stainless Steel", "Forged", "Razor Sharp", "Japanese"),
                39.0,
            ),
            "Cookware": (
                ("Frying Pan", "Cookware Set", "Saucepan", "Dutch Oven"),
                ("Non-Stick", "Cast Iron", "Induction Ready", "Ceramic"),
                55.0,
            ),
            "CoffeeMakers": (
                ("Coffee Maker", "Espresso Machine", "French Press"),
                ("Programmable", "Single Serve", "Stainless Steel", "Compact"),
                79.0,
            ),
        },
        "Furniture": {
            "Chairs": (
                ("Office Chair", "Dining Chair", "Armchair"),
                ("Ergonomic", "Upholstered", "Swivel", "Mid-Century"),
                149.0,
            ),
            "Desks": (
                ("Standing Desk", "Writing Desk", "Computer Desk"),
                ("Adjustable", "Solid Wood", "Compact", "L-Shaped"),
                229.0,
            ),
        },
        "Decor": {
            "Lamps": (("Table Lamp", "Floor Lamp", "Desk Lamp"), ("LED", "Dimmable", "Modern", "Vintage"), 42.0),
            "Rugs": (("Area Rug", "Runner Rug", "Shag Rug"), ("Washable", "Handwoven", "Non-Slip", "Boho"), 89.0),
        },
    },
    "Clothing": {
        "Men": {
            "MensShirts": (
                ("Men's Shirt", "Men's Polo Shirt", "Men's T-Shirt"),
                ("Cotton", "Slim Fit", "Linen", "Casual"),
                29.0,
            ),
            "MensShoes": (
                ("Men's Running Shoes", "Men's Sneakers", "Men's Loafers"),
                ("Breathable", "Leather", "Lightweight", "Cushioned"),
                79.0,
            ),
        },
        "Women": {
            "Dresses": (("Women's Dress", "Maxi Dress", "Summer Dress"), ("Floral", "Casual", "Elegant", "Wrap"), 45.0),
            "WomensShoes": (
                ("Women's Sneakers", "Women's Sandals", "Women's Boots"),
                ("Comfortable", "Leather", "Platform", "Waterproof"),
                69.0,
            ),
        },
        "Accessories": {
            "Bags": (
                ("Backpack Purse", "Tote Bag", "Crossbody Bag"),
                ("Leather", "Canvas", "Travel", "Minimalist"),
                49.0,
            ),
            "Sunglasses": (
                ("Sunglasses", "Aviator Sunglasses", "Sport Sunglasses"),
                ("Polarized", "UV400", "Retro", "Lightweight"),
                35.0,
            ),
        },
    },
    "Sports&Outdoors": {
        "Fitness": {
            "YogaMats": (
                ("Yoga Mat", "Exercise Mat", "Pilates Mat"),
                ("Non-Slip", "Extra Thick", "Eco-Friendly", "Foldable"),
                28.0,
            ),
            "Dumbbells": (
                ("Dumbbell Set", "Adjustable Dumbbells", "Kettlebell"),
                ("Cast Iron", "Neoprene", "Adjustable", "Hex"),
                89.0,
            ),
        },
        "Camping": {
            "Tents": (
                ("Camping Tent", "Backpacking Tent", "Family Tent"),
                ("Waterproof", "2-Person", "Instant Setup", "Ultralight"),
                139.0,
            ),
            "HikingBackpacks": (
                ("Hiking Backpack", "Daypack", "Trekking Pack"),
                ("40L", "Waterproof", "Ventilated", "Ultralight"),
                79.0,
            ),
        },
        "Cycling": {
            "Bikes": (
                ("Mountain Bike", "Road Bike", "Hybrid Bike"),
                ("Aluminum", "21-Speed", "Carbon", "Folding"),
                499.0,
            ),
            "Helmets": (
                ("Bike Helmet", "Cycling Helmet", "MIPS Helmet"),
                ("Ventilated", "Lightweight", "Adjustable", "Aero"),
                59.0,
            ),
        },
    },
    "Books": {
        "Fiction": {
            "Novels": (
                ("Novel", "Literary Novel", "Paperback Novel"),
                ("Bestselling", "Award-Winning", "Historical", "Romantic"),
                16.0,
            ),
            "Thrillers": (
                ("Thriller", "Mystery Novel", "Crime Thriller"),
                ("Gripping", "Psychological", "Bestselling", "Dark"),
                15.0,
            ),
        },
        "NonFiction": {
            "Cookbooks": (
                ("Cookbook", "Baking Book", "Recipe Book"),
                ("Vegetarian", "Quick", "Illustrated", "Family"),
                24.0,
            ),
            "Biographies": (
                ("Biography", "Memoir", "Autobiography"),
                ("Inspiring", "Illustrated", "Definitive", "Candid"),
                19.0,
            ),
        },
    },
    "Beauty": {
        "Skincare": {
            "Moisturizers": (
                ("Face Moisturizer", "Night Cream", "Hydrating Lotion"),
                ("Hydrating", "Fragrance-Free", "Organic", "SPF 30"),
                22.0,
            ),
            "Serums": (
                ("Vitamin C Serum", "Face Serum", "Retinol Serum"),
                ("Brightening", "Anti-Aging", "Lightweight", "Hyaluronic"),
                26.0,
            ),
        },
        "Haircare": {
            "Shampoos": (
                ("Shampoo", "Conditioner", "Shampoo and Conditioner Set"),
                ("Sulfate-Free", "Volumizing", "Argan Oil", "Repairing"),
                14.0,
            ),
            "HairDryers": (
                ("Hair Dryer", "Hair Straightener", "Curling Iron"),
                ("Ionic", "Ceramic", "Travel", "Professional"),
                49.0,
            ),
        },
    },
    "Toys&Games": {
        "BoardGames": {
            "StrategyGames": (
                ("Strategy Board Game", "Card Game", "Deck-Building Game"),
                ("Family", "Cooperative", "Two-Player", "Classic"),
                39.0,
            ),
            "PartyGames": (("Party Game", "Trivia Game", "Word Game"), ("Hilarious", "Family", "Adult", "Quick"), 24.0),
        },
        "Toys": {
            "BuildingSets": (
                ("Building Blocks Set", "Construction Kit", "Magnetic Tiles"),
                ("Creative", "STEM", "1000-Piece", "Colorful"),
                49.0,
            ),
            "Puzzles": (
                ("Jigsaw Puzzle", "3D Puzzle", "Wooden Puzzle"),
                ("1000-Piece", "Challenging", "Scenic", "Kids"),
                19.0,
            ),
        },
    },
    "Grocery": {
        "Beverages": {
            "Coffee": (
                ("Whole Bean Coffee", "Ground Coffee", "Coffee Pods"),
                ("Dark Roast", "Organic", "Medium Roast", "Single Origin"),
                14.0,
            ),
            "Tea": (("Green Tea", "Herbal Tea", "Black Tea"), ("Organic", "Loose Leaf", "Decaf", "Chai"), 9.0),
        },
        "Snacks": {
            "Chocolate": (
                ("Dark Chocolate Bar", "Chocolate Truffles", "Milk Chocolate"),
                ("Belgian", "Sea Salt", "Organic", "Gift Box"),
                8.0,
            ),
            "Nuts": (
                ("Mixed Nuts", "Roasted Almonds", "Cashews"),
                ("Salted", "Unsalted", "Honey Roasted", "Raw"),
                12.0,
            ),
        },
    },
}

BRANDS = (
    "Sonaro",
    "Veltrix",
    "Kinetica",
    "Aurora",
    "Northpeak",
    "Lumina",
    "Brisa",
    "Quanta",
    "Oakridge",
    "Nimbus",
    "Zephyr",
    "Halcyon",
    "Ferro",
    "Marlow",
    "Cobalt",
    "Solace",
    "Trailex",
    "Verdana",
    "Altura",
    "Pioneer",
)

USES = ("everyday use", "travel", "gifting", "home", "the office", "outdoor adventures", "beginners", "professionals")


def leaves() -> list[tuple[str, str, str]]:
    """All (top, mid, leaf) triples in a fixed order."""
    return [(top, mid, leaf) for top, mids in TAXONOMY.items() for mid, ls in mids.items() for leaf in ls]


def category_tree() -> dict:
    """The taxonomy as nested dicts of names (what `category_tree.json` holds)."""
    return {top: {mid: sorted(ls) for mid, ls in mids.items()} for top, mids in TAXONOMY.items()}


def display_name(node: str) -> str:
    """'WearableTechnology' -> 'wearable technology', 'Home&Kitchen' -> 'home & kitchen'."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", node).replace("&", " & ")
    return spaced.lower().replace("mens ", "men's ").replace("womens ", "women's ")
