"""The PyPI client ksql-python-ng, unmodified, against a running `eddy server`.

Usage: python ksql_client.py http://127.0.0.1:PORT   (run by host/eddy/tests/e2e/server.rs)
"""

import json
import sys
import threading
import time

from ksql import KSQLAPI
from ksql import utils
from ksql.errors import KSQLError


def main(url):
    client = KSQLAPI(url)  # reads GET /info
    assert client.get_ksql_version(), "no version in /info"

    client.ksql("CREATE STREAM pyreadings (car_id VARCHAR, temp DOUBLE);")
    client.ksql("CREATE STREAM pyhot AS SELECT car_id, temp FROM pyreadings WHERE temp > 90;")
    streams = utils.get_all_streams(client, prefix="py")
    assert sorted(streams) == ["PYHOT", "PYREADINGS"], streams

    info = utils.get_stream_info(client, "pyreadings")
    names = [f["name"] for f in info["fields"]]
    assert names == ["CAR_ID", "TEMP"], names
    assert len(info["readQueries"]) == 1, info
    assert utils.get_stream_info(client, "nothing_here") is None  # error_code 40001
    assert client.get_properties(), "SHOW PROPERTIES"

    try:
        client.ksql("CREATE STREAM broken (a NUMBER);")
        raise AssertionError("a bad statement must raise")
    except KSQLError as e:
        assert e.error_code == 40001, e.error_code

    # A push query over /query (HTTP/1.1 chunked), raw chunks; rows are inserted once it runs.
    def insert_later(rows, delay=0.5):
        def go():
            time.sleep(delay)
            client.ksql(
                "INSERT INTO pyreadings (car_id, temp) VALUES "
                + ", ".join(f"('{c}', {t})" for c, t in rows)
                + ";"
            )

        threading.Thread(target=go).start()

    insert_later([("a", 95.0), ("b", 20.0), ("c", 99.5)])
    raw = "".join(client.query("SELECT car_id, temp FROM pyhot EMIT CHANGES LIMIT 2;"))
    assert '"header"' in raw and '["a",95.0]' in raw.replace(" ", "") and '["c",99.5]' in raw.replace(" ", ""), raw
    assert "Limit Reached" in raw, raw

    # The same over HTTP/2 /query-stream, parsed; then close it with /close-query.
    insert_later([("d", 91.0), ("e", 92.0)])
    rows = []
    for row in client.query(
        "SELECT car_id, temp FROM pyhot EMIT CHANGES LIMIT 2;", use_http2=True, parse=True
    ):
        rows.append(row)
    assert rows == [{"CAR_ID": "d", "TEMP": 91.0}, {"CAR_ID": "e", "TEMP": 92.0}], rows

    # /close-query ends a running /query-stream; an id that is not running is refused (400).
    stream = client.query("SELECT car_id FROM pyhot EMIT CHANGES;", use_http2=True)
    header = json.loads(next(stream))
    assert header["columnNames"] == ["CAR_ID"], header
    assert client.close_query(header["queryId"]) is True
    assert list(stream) == [], "closed query ended"
    assert client.close_query(header["queryId"]) is False

    # inserts_stream over HTTP/2: one ack per row.
    acks = client.inserts_stream("pyreadings", [{"CAR_ID": "f", "TEMP": 93.5}, {"CAR_ID": "g", "TEMP": 10.0}])
    assert [a["status"] for a in acks] == ["ok", "ok"], acks
    pulled = "".join(client.query("SELECT car_id, temp FROM pyhot;"))
    assert '"f"' in pulled and '"g"' not in pulled, pulled

    # Terminate the persistent query and drop both streams, as the client's helpers do.
    utils.drop_stream(client, "pyhot")
    utils.drop_stream(client, "pyreadings")
    assert utils.get_all_streams(client, prefix="py") == []
    queries = client.ksql("SHOW QUERIES;")[0]["queries"]
    assert queries == [], queries
    print("ksql-python-ng scenario: ok")


if __name__ == "__main__":
    main(sys.argv[1])
