def test_stub_starts_and_reports_stats(stub):
    stats = stub.stats()
    assert stats["pid"] == stub.pid
    assert stats["connections"] == 0
    assert stub.token("u-1")
    assert stub.stop() == 0
