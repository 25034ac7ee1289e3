from tests.conftest import insert_inbound, list_items


def test_worker_adds_and_replies(conn, start_worker, fake_twilio):
    start_worker()
    insert_inbound(conn, "buy milk")
    replies = fake_twilio.wait_for_messages(1)
    assert replies[0].body == "Added 1. buy milk"
    assert list_items(conn) == ["buy milk"]
