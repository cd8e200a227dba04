"""ClassificationService over a real server: batches, streams, recording, concurrency, bad input."""

import json
import threading

import grpc
import pytest
from hypothesis import given, settings, strategies as st

from server.client import Client, error_code
from server.core import Limits
from server.gen.conversion_matcher.v1 import classification_pb2 as pb, custom_conversions_pb2 as cc_pb
from server.testing import running_server
from tests.service_fixtures import ingest, owner, rejected  # noqa: F401 (fixtures)

PURCHASE_OVER_100 = {"and": [{"event": {"eq": "Purchase"}}, {"value": {"gt": 100}}]}


@pytest.fixture
def service(tmp_path):
    with running_server(tmp_path / "matcher.db", limits=Limits(max_batch_events=50, max_message_bytes=256 * 1024)) as s:
        yield s





def conversion_ids(results):
    return [[m.custom_conversion_id for m in r.conversions] for r in results]


def test_events_match_their_pixels_conversions_with_values(owner, ingest):
    px1 = owner.create_pixel("act_1", "one").id
    px2 = owner.create_pixel("act_1", "two").id
    big = owner.create_custom_conversion("act_1", "big", px1, PURCHASE_OVER_100, default_conversion_value=3).id
    thanks = owner.create_custom_conversion("act_1", "thanks", px1, {"url": {"i_contains": "thankyou"}}, default_conversion_value=1.5).id
    other = owner.create_custom_conversion("act_1", "other pixel", px2, {"event": "Purchase"}).id
    events = [
        {"pixel_id": px1, "event": "Purchase", "url": "https://x.example/THANKYOU.html", "custom_data": {"value": 120}},
        {"pixel_id": px1, "event": "Purchase", "url": "https://x.example/thankyou", "custom_data": {"value": "n/a"}},
        {"pixel_id": px2, "event": "Purchase", "url": "https://x.example/thankyou", "custom_data": {"value": 500}},
        {"pixel_id": "404", "event": "Purchase", "custom_data": {"value": 500}},
        {"pixel_id": px1, "event": "PageView"},
    ]
    results = ingest.classify_pixel_events(events)
    assert conversion_ids(results) == [[big, thanks], [thanks], [other], [], []]
    # The event's numeric value wins; otherwise each conversion's default value.
    assert [[m.value for m in r.conversions] for r in results] == [[120, 120], [1.5], [500], [], []]


def test_values_stay_with_their_events_between_events_that_match_nothing(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    lead = owner.create_custom_conversion("act_1", "lead", px, {"event": "Lead"}, default_conversion_value=2).id
    done = owner.create_custom_conversion("act_1", "done", px, {"url": {"i_contains": "done"}}, default_conversion_value=5).id
    events = [
        {"pixel_id": px, "event": "PageView", "custom_data": {"value": 1}},
        {"pixel_id": px, "event": "Lead", "custom_data": {"value": 7}},
        {"pixel_id": px, "event": "PageView", "custom_data": {"value": 8}},
        {"pixel_id": px, "event": "Lead", "url": "https://a.example/done", "custom_data": {"value": "abc"}},
        {"pixel_id": px, "event": "Lead", "custom_data": {"value": True}},
        {"pixel_id": px},
        {"pixel_id": px, "url": "https://a.example/DONE", "custom_data": {"value": " 4.5 "}},
    ]
    for record in (False, True):  # recording reads every event's value, classifying only the matching ones'
        results = ingest.classify_pixel_events(events, record=record)
        assert conversion_ids(results) == [[], [lead], [], [lead, done], [lead], [], [done]]
        assert [[m.value for m in r.conversions] for r in results] == [[], [7], [], [2, 5], [2], [], [4.5]]
        assert all(r.ads == () for r in results)
    columns = pb.PixelEventColumns(pixel_id=[px] * 3, event=["Lead", "", "Lead"])
    reply = ingest.call(ingest.classification.ClassifyPixelEvents, pb.ClassifyPixelEventsRequest(columns=columns))
    # No ad tracks the pixel: one zero count per event, no ad entries.
    assert list(reply.conversion_counts) == [1, 0, 1] and list(reply.conversion_values) == [2, 2]
    assert list(reply.ad_counts) == [0, 0, 0] and not reply.ad_ids and not reply.tracking_spec_indexes


def test_batches_no_ad_tracks_reply_one_zero_ad_count_per_event_whatever_their_size(owner, ingest):
    # The zeros come from a small cache of serialised replies per batch size: more sizes than it
    # keeps, an empty batch, and sizes again after they were evicted.
    px = owner.create_pixel("act_1", "p").id
    owner.create_custom_conversion("act_1", "lead", px, {"event": "Lead"}, default_conversion_value=2)
    for size in [0, 1, 2, 3, 5, 8, 13, 21, 34, 50, 1, 3, 50]:
        columns = pb.PixelEventColumns(pixel_id=[px] * size, event=["Lead", "PageView"] * (size // 2) + ["Lead"] * (size % 2))
        reply = ingest.call(ingest.classification.ClassifyPixelEvents, pb.ClassifyPixelEventsRequest(columns=columns))
        assert list(reply.ad_counts) == [0] * size, size
        assert not reply.ad_ids and not reply.tracking_spec_indexes and not reply.conversion_spec_indexes
        assert list(reply.conversion_counts) == [1, 0] * (size // 2) + [1] * (size % 2)


def test_values_no_double_holds_fall_back_to_the_default(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    lead = owner.create_custom_conversion("act_1", "lead", px, {"event": "Lead"}, default_conversion_value=2).id
    # An integer past a double's range, infinities as text and in JSON's number syntax: no own value.
    odd = [10 ** 400, -(10 ** 400), "1e999", "-inf", "nan", 1e308, [3], {"v": 3}]
    events = [{"pixel_id": px, "event": "Lead", "custom_data": {"value": v}} for v in odd]
    for record in (False, True):
        results = ingest.classify_pixel_events(events, record=record)
        assert conversion_ids(results) == [[lead]] * len(odd)
        assert [r.conversions[0].value for r in results] == [2, 2, 2, 2, 2, 1e308, 2, 2]


def test_the_value_parameter_is_found_as_a_rule_finds_it_in_any_case(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    big = owner.create_custom_conversion("act_1", "big", px, PURCHASE_OVER_100, default_conversion_value=3).id
    lead = owner.create_custom_conversion("act_1", "lead", px, {"event": "Lead"}, default_conversion_value=2).id
    events = [
        {"pixel_id": px, "event": "Purchase", "custom_data": {"Value": 150}},  # the rule read 150: so does the value
        {"pixel_id": px, "event": "Lead", "custom_data": {"VALUE": "4.5", "value": 7}},  # the exact key wins
        {"pixel_id": px, "event": "Lead", "custom_data": {"vALUE": 9, "Value": 8}},  # else the first in order
        {"pixel_id": px, "event": "Lead", "custom_data": {"value": None, "Value": 8}},  # an exact null: none
        {"pixel_id": px, "event": "Lead", "custom_data": {"valuе": 5}},  # a Cyrillic "е": another key
    ]
    for record in (False, True):
        for reply_as_buffers in (False, True):
            results = ingest.classify_pixel_events(events, record=record, reply_as_buffers=reply_as_buffers)
            assert conversion_ids(results) == [[big], [lead], [lead], [lead], [lead]]
            assert [[m.value for m in r.conversions] for r in results] == [[150], [7], [9], [2], [2]]
    # Recorded twice: every event's own value counts toward the pixel's amount, found the same way.
    stats = owner.stats(big, aggregation="usd_amount")
    assert [row.value for row in stats.rows] == [300]
    unmatched = owner.stats(big, aggregation="unmatched_usd_amount")
    assert [row.value for row in unmatched.rows] == [2 * (7 + 9)]


def test_rows_and_columns_give_the_same_answer(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    cid = owner.create_custom_conversion("act_1", "c", px, {"and": [{"device_type": "desktop"}, {"path": "/done"}]}).id
    rows = [
        pb.PixelEvent(pixel_id=px, event="Purchase", url="https://a.example/done?q=1", device_type="desktop"),
        pb.PixelEvent(pixel_id=px, event="Purchase", url="https://a.example/done", custom_data='{"value": 2}'),
    ]
    by_rows = ingest.call(ingest.classification.ClassifyPixelEvents, pb.ClassifyPixelEventsRequest(events=rows))
    columns = pb.PixelEventColumns(
        pixel_id=[px, px], event=["Purchase", "Purchase"], url=[r.url for r in rows], device_type=["desktop", ""],
        custom_data='[null, {"value": 2}]',
    )
    by_columns = ingest.call(ingest.classification.ClassifyPixelEvents, pb.ClassifyPixelEventsRequest(columns=columns))
    assert by_rows == by_columns
    assert list(by_rows.conversion_counts) == [1, 0] and list(by_rows.custom_conversion_ids) == [cid]


def test_streaming_answers_each_batch_in_order(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    cid = owner.create_custom_conversion("act_1", "c", px, {"event": "Lead"}).id
    batches = [[{"pixel_id": px, "event": name}] * size for name, size in [("Lead", 3), ("PageView", 2), ("Lead", 1)]]
    replies = list(ingest.stream_pixel_events(batches))
    assert [conversion_ids(r) for r in replies] == [[[cid]] * 3, [[]] * 2, [[cid]]]


def test_registration_is_visible_at_once_and_delete_or_archive_remove_it(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    event = [{"pixel_id": px, "event": "Lead"}]
    assert conversion_ids(ingest.classify_pixel_events(event)) == [[]]
    first = owner.create_custom_conversion("act_1", "a", px, {"event": "Lead"}).id
    second = owner.create_custom_conversion("act_1", "b", px, {"event": "Lead"}).id
    assert conversion_ids(ingest.classify_pixel_events(event)) == [[first, second]]
    owner.call(owner.custom_conversions.ArchiveCustomConversion, cc_pb.ArchiveCustomConversionRequest(custom_conversion_id=first))
    assert conversion_ids(ingest.classify_pixel_events(event)) == [[second]]
    owner.call(owner.custom_conversions.DeleteCustomConversion, cc_pb.DeleteCustomConversionRequest(custom_conversion_id=second))
    assert conversion_ids(ingest.classify_pixel_events(event)) == [[]]


def test_updated_default_value_applies_to_the_next_batch(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    cid = owner.create_custom_conversion("act_1", "a", px, {"event": "Lead"}, default_conversion_value=1).id
    owner.update_custom_conversion(cid, default_conversion_value=9)
    assert ingest.classify_pixel_events([{"pixel_id": px, "event": "Lead"}])[0].conversions[0].value == 9


def test_classification_needs_the_ingest_scope(service, owner):
    for token, status, code in (("owner-token", grpc.StatusCode.PERMISSION_DENIED, 200), ("nope", grpc.StatusCode.UNAUTHENTICATED, 190)):
        with Client(service[1], token) as client:
            error = rejected(client.classify_pixel_events, [{"pixel_id": "1", "event": "Lead"}])
            assert error.code() == status and error_code(error) == code
            error = rejected(lambda: list(client.stream_pixel_events([[{"pixel_id": "1"}]])))
            assert error.code() == status and error_code(error) == code
            error = rejected(client.classify_actions, [{"action.type": "like", "page": "1"}])
            assert error_code(error) == code


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.ClassifyPixelEventsRequest(events=[pb.PixelEvent(pixel_id="1", custom_data="{oops")]), 100, "events[0].custom_data"),
        (pb.ClassifyPixelEventsRequest(events=[pb.PixelEvent(pixel_id="1", custom_data="[1]")]), 100, "events[0].custom_data"),
        (pb.ClassifyPixelEventsRequest(columns=pb.PixelEventColumns(pixel_id=["1", "2"], event=["a"])), 100, "columns.event"),
        (pb.ClassifyPixelEventsRequest(columns=pb.PixelEventColumns(pixel_id=["1"], custom_data="[{}, {}]")), 100, "columns.custom_data"),
        (pb.ClassifyPixelEventsRequest(columns=pb.PixelEventColumns(pixel_id=["1"], custom_data="[7]")), 100, "columns.custom_data[0]"),
        (pb.ClassifyPixelEventsRequest(columns=pb.PixelEventColumns(pixel_id=["1"], custom_data="[" * 100000)), 100, "columns.custom_data"),
        (pb.ClassifyPixelEventsRequest(columns=pb.PixelEventColumns(pixel_id=["1"] * 51)), 368, "limit of 50"),
        (
            pb.ClassifyPixelEventsRequest(events=[pb.PixelEvent(pixel_id="1")], columns=pb.PixelEventColumns(pixel_id=["1"])),
            100, "not both events and columns",
        ),
    ],
)
def test_malformed_batches_are_rejected_and_the_server_stays_up(owner, ingest, request_, code, message):
    error = rejected(ingest.call, ingest.classification.ClassifyPixelEvents, request_)
    assert error_code(error) == code and message in error.details()
    assert error.code() == (grpc.StatusCode.RESOURCE_EXHAUSTED if code == 368 else grpc.StatusCode.INVALID_ARGUMENT)
    assert ingest.classify_pixel_events([{"pixel_id": "1", "event": "x"}])[0].conversions == ()


def test_oversized_message_is_rejected_and_the_server_stays_up(ingest):
    huge = pb.ClassifyPixelEventsRequest(events=[pb.PixelEvent(pixel_id="1", url="x" * (300 * 1024))])
    error = rejected(ingest.call, ingest.classification.ClassifyPixelEvents, huge)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ingest.classify_pixel_events([{"pixel_id": "1"}])[0].conversions == ()


def test_garbage_bytes_are_rejected(service):
    channel = grpc.insecure_channel(service[1])
    raw = channel.unary_unary("/conversion_matcher.v1.ClassificationService/ClassifyPixelEvents")
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff\xff garbage", metadata=(("authorization", "Bearer ingest-token"),), timeout=10)
    assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    channel.close()
    with Client(service[1], "ingest-token") as client:
        assert client.classify_pixel_events([{"pixel_id": "1"}])[0].conversions == ()


def test_registration_while_another_thread_classifies(owner, service):
    """Classification keeps answering while conversions are added: every reply is a whole
    snapshot (the conversions it reports are a prefix of the registration order)."""
    px = owner.create_pixel("act_1", "p").id
    registered: list[str] = []
    problems: list[object] = []
    replies: list[list[str]] = []
    stop = threading.Event()

    def classify():
        with Client(service[1], "ingest-token") as client:
            while not stop.is_set():
                try:
                    results = client.classify_pixel_events([{"pixel_id": px, "event": "Lead"}] * 20)
                except grpc.RpcError as error:  # pragma: no cover - reported below
                    problems.append(error)
                    return
                seen = conversion_ids(results)
                if any(ids != seen[0] for ids in seen):
                    problems.append(seen)
                replies.append(seen[0])

    workers = [threading.Thread(target=classify) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for i in range(40):
            registered.append(owner.create_custom_conversion("act_1", f"c{i}", px, {"event": "Lead"}).id)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert problems == []
    # Each reply saw a whole number of registrations, in order; replies kept coming throughout.
    assert all(seen == registered[: len(seen)] for seen in replies)
    assert replies
    with Client(service[1], "ingest-token") as client:
        assert conversion_ids(client.classify_pixel_events([{"pixel_id": px, "event": "Lead"}])) == [registered]


def test_recording_is_off_unless_asked(service, owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    cid = owner.create_custom_conversion("act_1", "c", px, {"event": "Lead"}).id
    ingest.classify_pixel_events([{"pixel_id": px, "event": "Lead"}])
    assert owner.get_pixel(px).status == "UNVERIFIED"
    assert owner.stats(cid).rows == []
    ingest.classify_pixel_events([{"pixel_id": px, "event": "Lead", "event_time": 10**12}], record=True)
    pixel = owner.get_pixel(px)
    # An event time in the future counts as the receive time.
    assert pixel.status == "ACTIVE" and pixel.last_firing_time <= service[0].core.now()
    assert [r.value for r in owner.stats(cid).rows] == [1]


def test_events_of_unknown_pixels_are_classified_but_not_recorded(service, owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    cid = owner.create_custom_conversion("act_1", "c", px, {"event": "Lead"}).id
    results = ingest.classify_pixel_events(
        [{"pixel_id": "999", "event": "Lead"}, {"pixel_id": px, "event": "Lead"}], record=True
    )
    assert conversion_ids(results) == [[], [cid]]
    store = service[0].core.store
    assert [row[1] for row in store.pixel_hourly(px, 0, 2 * 10**9)] == [1]
    assert store.pixel_hourly("999", 0, 2 * 10**9) == []


def test_every_call_is_counted_under_its_method_and_status(service, ingest):
    # The interceptor wraps each method's handler once and keeps the metric children per
    # (method, code): calls after the first, and other status codes, must still be counted apart.
    server, _ = service
    method = "/conversion_matcher.v1.ClassificationService/ClassifyPixelEvents"
    for _ in range(3):
        ingest.classify_pixel_events([{"pixel_id": "1", "event": "Lead"}])
    for _ in range(2):
        rejected(ingest.call, ingest.classification.ClassifyPixelEvents,
                 pb.ClassifyPixelEventsRequest(events=[pb.PixelEvent(pixel_id="1", custom_data="{oops")]))
    registry = server.core.metrics.registry
    assert registry.get_sample_value("cm_requests_total", {"method": method, "code": "OK"}) == 3
    assert registry.get_sample_value("cm_requests_total", {"method": method, "code": "INVALID_ARGUMENT"}) == 2
    assert registry.get_sample_value("cm_request_seconds_count", {"method": method}) == 5
    assert registry.get_sample_value("cm_events_classified_total", {"kind": "pixel_event"}) == 3


def test_a_recorded_batch_whose_reply_is_too_big_is_refused_and_records_nothing(tmp_path):
    """gRPC itself refuses a reply over the message limit, after the handler returned: a
    recorded batch must not be stored then, or a client retrying it counts it twice."""
    with running_server(tmp_path / "m.db", limits=Limits(max_message_bytes=64 * 1024)) as (_, target), \
            Client(target, "owner-token") as owner, Client(target, "ingest-token") as ingest:
        pixel = owner.create_pixel("act_1", "p").id
        conversions = [owner.create_custom_conversion("act_1", f"c{i}", pixel, {"event": "Purchase"}).id
                       for i in range(10)]
        big = [{"pixel_id": pixel, "event": "Purchase"}] * 400  # 4,000 matches: ~110 KB of reply
        for attempt in range(2):
            error = rejected(ingest.classify_pixel_events, big, record=True)
            assert (error.code(), error_code(error)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 368)
            assert error.details().startswith("events: the reply would be ") and "nothing was recorded" in error.details()
        assert [owner.stats(c, "pixel_fire").rows for c in conversions[:1]] == [[]]
        assert all(not owner.stats(c).rows for c in conversions)
        # in a stream: the replies before it were sent (and recorded), the big one is not
        small = [{"pixel_id": pixel, "event": "Purchase"}] * 2
        requests = [pb.ClassifyPixelEventsRequest(events=[
            pb.PixelEvent(pixel_id=e["pixel_id"], event=e["event"]) for e in batch], record=True)
            for batch in (small, big, small)]
        replies = ingest.classification.StreamClassifyPixelEvents(iter(requests), metadata=ingest.metadata, timeout=10)
        assert list(next(replies).conversion_counts) == [10, 10]
        with pytest.raises(grpc.RpcError) as caught:
            next(replies)
        assert caught.value.details().startswith("requests[1].events: the reply would be ")
        assert [r.value for r in owner.stats(conversions[0]).rows] == [2]
        # without recording: the same refusal (nothing is stored either way)
        for form, as_buffers in (("columns", False), ("buffers", False), ("columns", True), ("buffers", True)):
            error = rejected(ingest.classify_pixel_events, big, form=form, reply_as_buffers=as_buffers)
            assert (error.code(), error_code(error)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 368), (form, as_buffers)
            assert error.details().startswith("events: the reply would be ") and "recorded" not in error.details()
        assert [r.value for r in owner.stats(conversions[0]).rows] == [2]


@pytest.fixture(scope="module")
def forty_ads(tmp_path_factory):
    """(server, ingest client) of a server whose replies may be 64 KiB at most, with 40 ads of
    64-character ids that each count a firing of pixel PX and a like of page P1: a reply
    listing them for 40 items is ~130 KB. Shared by the tests below, which read it only and
    each count calls of their own methods (ClassifyPixelEvents, ClassifyActions): a test
    that calls another's method must not use it."""
    path = tmp_path_factory.mktemp("forty_ads") / "m.db"
    with running_server(path, limits=Limits(max_message_bytes=64 * 1024)) as (server, target), \
            Client(target, "owner-token") as owner, Client(target, "ingest-token") as ingest:
        for i in range(40):
            owner.register_ad({"id": f"ad-{i:02d}-" + "x" * 56, "account_id": "act_1", "objective": "PAGE_LIKES",
                               "creative": {"kind": "page_like", "page_id": "P1"},
                               "tracking_specs": [{"action.type": "offsite_conversion", "offsite_pixel": "PX"}]})
        yield server, ingest


def test_a_reply_too_big_for_its_ads_alone_is_code_368_and_counted_as_refused(forty_ads):
    """Before, a reply over the limit without recording was gRPC's own refusal after the
    handler returned: no error code, and the metrics counted the call as OK."""
    server, ingest = forty_ads
    few = [{"pixel_id": "PX", "event": "Lead"}] * 2
    assert [len(r.ads) for r in ingest.classify_pixel_events(few, reply_as_buffers=True)] == [40, 40]
    error = rejected(ingest.classify_pixel_events, few * 20, reply_as_buffers=True)  # 1,600 ads: ~130 KB
    assert (error.code(), error_code(error)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 368)
    assert error.details().startswith("events: the reply would be ")
    method = "/conversion_matcher.v1.ClassificationService/ClassifyPixelEvents"
    registry = server.core.metrics.registry
    assert registry.get_sample_value("cm_requests_total", {"method": method, "code": "RESOURCE_EXHAUSTED"}) == 1
    assert registry.get_sample_value("cm_requests_total", {"method": method, "code": "OK"}) == 1


def test_an_actions_reply_too_big_is_code_368_in_unary_and_stream(forty_ads):
    """ClassifyActions' reply had no check: over the limit, gRPC refused it after the handler
    returned, with no code a client can act on (and the call was counted as OK)."""
    server, ingest = forty_ads
    like = {"action.type": "like", "page": "P1"}
    assert [len(ads) for ads in ingest.classify_actions([like] * 2)] == [40, 40]
    error = rejected(ingest.classify_actions, [like] * 40)  # 1,600 ads: ~130 KB
    assert (error.code(), error_code(error)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 368)
    assert error.details().startswith("actions: the reply would be ")
    assert error.details().endswith("send fewer actions per request")
    requests = [pb.ClassifyActionsRequest(actions=[json.dumps(like)] * n) for n in (2, 40)]
    replies = ingest.classification.StreamClassifyActions(iter(requests), metadata=ingest.metadata, timeout=10)
    assert list(next(replies).ad_counts) == [40, 40]
    with pytest.raises(grpc.RpcError) as caught:
        next(replies)
    assert caught.value.details().startswith("requests[1].actions: the reply would be ")
    method = "/conversion_matcher.v1.ClassificationService/ClassifyActions"
    registry = server.core.metrics.registry
    assert registry.get_sample_value("cm_requests_total", {"method": method, "code": "RESOURCE_EXHAUSTED"}) == 1
    # only the answered actions count as classified: a refused batch is sent again, split
    assert registry.get_sample_value("cm_events_classified_total", {"kind": "action"}) == 4


ids_strategy = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=30)


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 2**32 - 1), max_size=30), ids=ids_strategy,
       values=st.lists(st.floats(allow_nan=False), max_size=30), ad_ids=ids_strategy,
       indexes=st.lists(st.integers(-1, 2**31 - 1), min_size=2, max_size=2))
def test_the_reply_size_bounds_are_never_below_the_exact_size(counts, ids, values, ad_ids, indexes):
    """The handler measures a reply only when its bound passes the limit: a bound below the
    exact size would let a reply gRPC refuses (and a recorded batch counted twice) through."""
    from matcher.columns import match_buffers
    from server.classification import (_packed_bound, _strings_bound, ad_columns, ad_columns_bound, buffers_bound,
                                       buffers_reply)

    ads = [[(ad_id, indexes[0], indexes[1])] for ad_id in ad_ids] + [[]] * len(counts)
    columns = ad_columns(ads)
    ads_reply = pb.ClassifyPixelEventsResponse(**columns)
    assert ads_reply.ByteSize() <= ad_columns_bound(columns)
    lists = pb.ClassifyPixelEventsResponse(conversion_counts=counts, custom_conversion_ids=ids, conversion_values=values)
    assert lists.ByteSize() <= _packed_bound(len(counts), 5) + _strings_bound(ids) + _packed_bound(len(values), 8)
    found = match_buffers(counts, ids, values[:len(ids)] + [0.0] * (len(ids) - len(values)))
    assert buffers_reply(len(counts), found).ByteSize() <= buffers_bound(found)
    assert buffers_reply(2**32 - 1, found).ByteSize() <= buffers_bound(found)  # the longest count


def test_events_in_two_forms_name_the_field_alone_and_in_a_stream(ingest):
    request = pb.ClassifyPixelEventsRequest(events=[pb.PixelEvent(pixel_id="1")], columns=pb.PixelEventColumns(pixel_id=["1"]))
    error = rejected(ingest.call, ingest.classification.ClassifyPixelEvents, request)
    assert error_code(error) == 100
    assert error.details() == "columns: give events in one form (events as rows, columns or buffers), not both events and columns"
    replies = ingest.classification.StreamClassifyPixelEvents(iter([request]), metadata=ingest.metadata, timeout=10)
    error = rejected(list, replies)
    assert error.details().startswith("requests[0].columns: give events in one form")


def test_an_events_value_is_found_under_any_case_of_its_name():
    from server.classification import event_value

    assert [event_value(data) for data in ({"VaLuE": 3}, {"value": "2.5", "VALUE": 9}, {"Value": None, "VALUE": 4},
                                           {"color": "red"}, {}, None, {"valuе": 1})] == [3.0, 2.5, None, None, None, None, None]
