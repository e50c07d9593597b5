"""Issue 12 item 5: the Amazon review JSON-lines loader, 2014/2018 and 2023 layouts, with and without metadata."""

import gzip
import json

import pandas as pd
import pytest

from rec_core.bench.quality import load_named_dataset
from rec_core.data.amazon_reviews import amazon_review_files, load_amazon_reviews
from rec_core.data.loaders import load_dataset
from rec_core.data.validation import DataValidationError

REVIEWS_2018 = [
    {
        "reviewerID": "A1",
        "asin": "B001",
        "overall": 5.0,
        "unixReviewTime": 1400000000,
        "reviewTime": "05 13, 2014",
        "summary": "Deep bass headphones",
        "reviewText": "The bass is deep and the headphones fit well.",
    },
    {
        "reviewerID": "A2",
        "asin": "B001",
        "overall": 2.0,
        "unixReviewTime": 1400000500,
        "summary": "Headphones broke, bass ok",
        "reviewText": "Broke after a week.",
    },
    {
        "reviewerID": "A2",
        "asin": "B002",
        "overall": 4.0,
        "unixReviewTime": 1400001000,
        "summary": "Five Stars",
        "reviewText": "A solid &amp; sturdy tripod.",
    },
    {"reviewerID": "A3", "asin": "B002", "overall": 3.0, "unixReviewTime": 1400002000, "summary": "Tripod tripod legs"},
    {"reviewerID": "A3", "asin": "B003", "overall": 1.0, "unixReviewTime": 1400003000, "reviewText": "No title here."},
]
# old metadata files are Python literals, not JSON; B004 was never reviewed; B003 has no metadata row
META_2018 = [
    (
        "{'asin': 'B001', 'title': 'Sony MDR Headphones', 'category': ['Electronics', 'Headphones', 'Over-Ear'], "
        "'price': '$12.99', 'description': ['Closed back.', 'Wired &amp; light.'], 'imageURL': ['http://img/b001.jpg']}"
    ),
    json.dumps(
        {
            "asin": "B002",
            "title": "Travel Tripod",
            "categories": [["Camera & Photo", "Tripods"], ["Sale"]],
            "price": "$1,299.50 - $1,499.00",
            "description": "Aluminium legs.",
            "imUrl": "http://img/b002.jpg",
        }
    ),
    json.dumps({"asin": "B004", "title": "Never reviewed", "price": 3.5}),
]
REVIEWS_2023 = [
    {
        "user_id": "U1",
        "asin": "X1",
        "parent_asin": "P1",
        "rating": 5.0,
        "timestamp": 1588615855070,
        "title": "Smells lovely",
        "text": "Lovely shampoo.",
        "helpful_vote": 0,
        "verified_purchase": True,
    },
    {
        "user_id": "U2",
        "asin": "X2",
        "parent_asin": "P1",
        "rating": 4.0,
        "timestamp": 1588615856999,
        "title": "Nice",
        "text": "Works.",
    },
    {
        "user_id": "U2",
        "asin": "X3",
        "parent_asin": "P2",
        "rating": 1.0,
        "timestamp": 1600000000000,
        "title": "Conditioner dried hair",
        "text": "Dry.",
    },
]
META_2023 = [
    {
        "main_category": "All Beauty",
        "title": "Argan Shampoo",
        "average_rating": 4.8,
        "rating_number": 10,
        "price": None,
        "images": [{"thumb": "http://t/p1.jpg", "large": "http://l/p1.jpg", "variant": "MAIN", "hi_res": None}],
        "categories": [],
        "description": [],
        "parent_asin": "P1",
    },
    {
        "main_category": "All Beauty",
        "title": "Silk Conditioner",
        "price": 7.25,
        "images": [{"thumb": "http://t/p2.jpg"}],
        "categories": ["Beauty & Personal Care", "Hair Care", "Conditioners"],
        "description": ["Soft | silky."],
        "parent_asin": "P2",
    },
]


def write_lines(path, lines, gzipped=False):
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if gzipped else text.encode())
    return path


@pytest.fixture
def folder_2018(tmp_path):
    write_lines(tmp_path / "reviews_Electronics_5.json.gz", REVIEWS_2018, gzipped=True)
    write_lines(tmp_path / "meta_Electronics.json.gz", META_2018, gzipped=True)
    return tmp_path


@pytest.fixture
def folder_2023(tmp_path):
    write_lines(tmp_path / "All_Beauty.jsonl", REVIEWS_2023)
    write_lines(tmp_path / "meta_All_Beauty.jsonl", META_2023)
    return tmp_path


def test_2018_reviews_without_metadata(tmp_path):
    users, items, interactions = load_amazon_reviews(write_lines(tmp_path / "reviews_Cell_Phones_5.json", REVIEWS_2018))
    assert interactions["user_id"].tolist() == ["A1", "A2", "A2", "A3", "A3"]
    assert interactions["item_id"].tolist() == ["B001", "B001", "B002", "B002", "B003"]
    assert interactions["rating"].tolist() == [5.0, 2.0, 4.0, 3.0, 1.0]
    assert set(interactions["interaction_type"]) == {"rate"}
    assert interactions["timestamp"].iloc[0] == pd.Timestamp(1400000000, unit="s", tz="UTC")
    assert interactions["review_title"].tolist()[:3] == [
        "Deep bass headphones",
        "Headphones broke, bass ok",
        "Five Stars",
    ]
    assert (
        interactions["review_content"].iloc[2] == "A solid & sturdy tripod."
        and interactions["review_title"].iloc[4] is None
    )
    by_id = items.set_index("item_id")
    # names from the most frequent review-title words, stopwords and star words left out
    assert by_id.at["B001", "product_name"] == "Bass Headphones Broke Deep"
    assert by_id.at["B002", "product_name"] == "Tripod Legs"
    assert by_id.at["B003", "product_name"] == "Amazon item B003"  # no title at all
    assert by_id.at["B001", "about_product"].startswith("From reviews: The bass is deep")
    assert set(items["category"]) == {"Amazon|Cell Phones"}  # from the file name
    assert (items["actual_price"] == 0.0).all() and items["rating"].isna().all() and items["img_link"].isna().all()
    assert by_id.at["B002", "arrival_date"] == pd.Timestamp(1400001000, unit="s", tz="UTC")
    assert (
        users["user_id"].tolist() == ["A1", "A2", "A3"] and users["age"].isna().all() and users["gender"].isna().all()
    )


def test_2018_gzipped_folder_with_literal_metadata(folder_2018):
    reviews, meta = amazon_review_files(folder_2018)
    assert (reviews.name, meta.name) == ("reviews_Electronics_5.json.gz", "meta_Electronics.json.gz")
    _, items, interactions = load_dataset(folder_2018)  # auto-detected
    by_id = items.set_index("item_id")
    assert sorted(by_id.index) == ["B001", "B002", "B003"]  # B004 was never reviewed
    assert by_id.at["B001", "product_name"] == "Sony MDR Headphones"
    assert by_id.at["B001", "category"] == "Amazon|Electronics|Headphones|Over-Ear"
    assert by_id.at["B001", "actual_price"] == 12.99 and by_id.at["B001", "discounted_price"] == 12.99
    assert by_id.at["B001", "about_product"] == "Closed back. Wired & light."
    assert by_id.at["B001", "img_link"] == "http://img/b001.jpg"
    assert by_id.at["B002", "category"] == "Amazon|Camera & Photo|Tripods"  # the first of the 2014 lists
    assert by_id.at["B002", "actual_price"] == 1299.5  # a range: its lower end
    assert by_id.at["B002", "img_link"] == "http://img/b002.jpg"
    # B003 has no metadata row: it falls back to what its reviews say
    assert (
        by_id.at["B003", "category"] == "Amazon|Electronics"
        and by_id.at["B003", "about_product"] == "From reviews: No title here."
    )
    assert len(interactions) == 5


def test_2023_layout_plain_and_gzipped_with_metadata(folder_2023, tmp_path_factory):
    users, items, interactions = load_amazon_reviews(folder_2023)
    assert interactions["item_id"].tolist() == ["P1", "P1", "P2"]  # parent_asin, not the variant asin
    assert interactions["user_id"].tolist() == ["U1", "U2", "U2"]
    assert interactions["timestamp"].iloc[0] == pd.Timestamp(1588615855, unit="s", tz="UTC")  # milliseconds
    assert interactions["rating"].tolist() == [5.0, 4.0, 1.0]
    assert interactions["review_content"].tolist() == ["Lovely shampoo.", "Works.", "Dry."]
    by_id = items.set_index("item_id")
    assert by_id.at["P1", "product_name"] == "Argan Shampoo" and by_id.at["P1", "category"] == "Amazon|All Beauty"
    assert by_id.at["P2", "category"] == "Amazon|Beauty & Personal Care|Hair Care|Conditioners"
    assert by_id.at["P1", "actual_price"] == 0.0 and by_id.at["P2", "actual_price"] == 7.25
    assert by_id.at["P1", "img_link"] == "http://l/p1.jpg" and by_id.at["P2", "img_link"] == "http://t/p2.jpg"
    assert by_id.at["P2", "about_product"] == "Soft | silky."
    assert by_id.at["P1", "about_product"].startswith("From reviews: Lovely shampoo.")  # empty description list
    gz = tmp_path_factory.mktemp("gz")
    write_lines(gz / "All_Beauty.jsonl.gz", REVIEWS_2023, gzipped=True)
    write_lines(gz / "meta_All_Beauty.jsonl.gz", META_2023, gzipped=True)
    for plain, zipped in zip((users, items, interactions), load_dataset(gz, "amazon-reviews")):
        pd.testing.assert_frame_equal(plain, zipped)


def test_2023_reviews_without_metadata_and_the_rating_mapping(tmp_path):
    path = write_lines(tmp_path / "Beauty.jsonl", REVIEWS_2023)
    _, items, interactions = load_amazon_reviews(path, negative_below=3.0)
    assert interactions["interaction_type"].tolist() == ["rate", "rate", "negative_view"]  # as load_movielens maps
    by_id = items.set_index("item_id")
    assert (
        by_id.at["P1", "product_name"] == "Lovely Smells" and by_id.at["P2", "product_name"] == "Conditioner Dried Hair"
    )
    assert set(items["category"]) == {"Amazon|Beauty"}


def test_malformed_lines_are_counted_and_named(tmp_path):
    lines = [REVIEWS_2018[0], "{not json", REVIEWS_2018[1], "[1, 2]", REVIEWS_2018[2]]
    path = write_lines(tmp_path / "reviews_x.json", lines)
    with pytest.raises(DataValidationError, match=r"reviews_x\.json: table: 2 bad row\(s\).*line 2") as error:
        load_amazon_reviews(path)
    assert error.value.bad_rows == 2
    path = write_lines(tmp_path / "reviews_w.json", ["{'reviewerID': 'A1',", *lines])  # the first line too
    with pytest.raises(DataValidationError, match=r"reviews_w\.json: table: 3 bad row\(s\).*line 1\)"):
        load_amazon_reviews(path)


def test_missing_required_key_names_the_field(tmp_path):
    lines = [
        REVIEWS_2018[0],
        {k: v for k, v in REVIEWS_2018[1].items() if k != "overall"},
        {k: v for k, v in REVIEWS_2018[2].items() if k != "overall"},
        REVIEWS_2018[3],
    ]
    path = write_lines(tmp_path / "reviews_y.json.gz", lines, gzipped=True)
    with pytest.raises(DataValidationError, match=r"reviews_y\.json\.gz: column 'overall': 2 bad row\(s\)"):
        load_amazon_reviews(path)
    lines = [REVIEWS_2023[0], {**REVIEWS_2023[1], "timestamp": "yesterday"}]
    with pytest.raises(DataValidationError, match=r"column 'timestamp': 1 bad row\(s\): values that are not numbers"):
        load_amazon_reviews(write_lines(tmp_path / "z.jsonl", lines))
    with pytest.raises(DataValidationError, match="neither 'reviewerID'"):
        load_amazon_reviews(write_lines(tmp_path / "other.jsonl", [{"id": 1}]))


def test_bad_metadata_and_folder_errors(folder_2018, tmp_path):
    write_lines(
        folder_2018 / "meta_Electronics.json.gz", [*META_2018, "{'title': 'no id'}", "{'asin': 'B9',"], gzipped=True
    )
    with pytest.raises(DataValidationError, match=r"meta_Electronics\.json\.gz: table: 1 bad row\(s\).*line 5"):
        load_amazon_reviews(folder_2018)
    write_lines(folder_2018 / "meta_Electronics.json.gz", [*META_2018, "{'title': 'no id'}"], gzipped=True)
    with pytest.raises(DataValidationError, match=r"meta_Electronics\.json\.gz: column 'asin': 1 bad row\(s\)"):
        load_amazon_reviews(folder_2018)
    write_lines(folder_2018 / "Books_5.json", REVIEWS_2018)
    with pytest.raises(DataValidationError, match="expected one reviews file"):
        load_amazon_reviews(folder_2018)
    (tmp_path / "empty").mkdir()
    write_lines(tmp_path / "empty" / "reviews.json", [])
    with pytest.raises(DataValidationError, match="no records"):
        load_amazon_reviews(tmp_path / "empty")


def test_bench_quality_loads_amazon_reviews(folder_2018):
    users, items, interactions, oracle = load_named_dataset(f"amazon-reviews:{folder_2018}", 0)
    assert oracle is None and len(users) == 3 and len(items) == 3 and len(interactions) == 5


def test_streaming_in_chunks_gives_the_same_tables(folder_2018, monkeypatch):
    from rec_core.data import amazon_reviews

    whole = load_amazon_reviews(folder_2018)
    monkeypatch.setattr(amazon_reviews, "CHUNK_ROWS", 2)
    for expected, chunked in zip(whole, load_amazon_reviews(folder_2018)):
        pd.testing.assert_frame_equal(expected, chunked)
