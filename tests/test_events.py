"""Messages, outcomes and links: what the Lambda logged after a block decides its outcome."""

import polars as pl

from calo_assets.combine import combine
from calo_assets.reading import read_logs
from calo_testkit.node_print import UNDEFINED
from tests.logbuilder import app, invocation, message, simple_log, tx, write_log


def read_one(tmp_path, records, name="x.log"):
    write_log(tmp_path / name, records, compress=False)
    return read_logs(tmp_path)


def test_every_message_of_an_invocation_is_its_own_transaction_with_its_outcome(tmp_path):
    outcomes = ["applied", "already_synced", "failed", "refused", None]
    fields = [tx(user=f"u{i}") for i in range(5)]
    msgs = [message(10 * i, "req-1", f, o or "none", message_id=f"m{i}") for i, (f, o) in enumerate(zip(fields, outcomes))]
    parsed = read_one(tmp_path, invocation(0, "req-1", msgs))
    t = parsed.transactions.sort("messageId")
    assert t["messageId"].to_list() == ["m0", "m1", "m2", "m3", "m4"]
    assert t["outcome"].to_list() == ["applied", "already_synced", "failed", "refused", "unknown"]
    assert set(t["requestId"]) == {"req-1"}
    assert parsed.events.filter(pl.col("kind") == "sync_failed")["transactionId"].to_list() == [fields[2]["id"]]
    assert parsed.events.filter(pl.col("kind") == "refusal")["transactionId"].to_list() == [fields[3]["id"]]


def test_records_are_put_in_time_order_before_outcomes_are_tied(tmp_path):
    """The real logs hold 20 'event published' lines above their block in the file but later in time."""
    f = tx()
    records = [app(0, "r", "Processing message m"), app(9, "r", "SubscriptionBalanceUpdated event published"),
               app(5, "r", "Start syncing the balance { transaction: { id: '%s', userId: 'u', currency: 'BHD', "
                           "amount: 1, vat: 0, oldBalance: 2, newBalance: 1 } }" % f["id"])]
    parsed = read_one(tmp_path, records)
    row = parsed.transactions.row(0, named=True)
    assert row["outcome"] == "applied" and row["outcomeLine"] == 3 and row["line"] == 5


def test_not_in_sync_error_links_to_the_transaction_of_its_message(tmp_path):
    f = tx(user="u9", new="10", payment="12")
    err = ("Subscription balance and payment balance are not in sync {\n  userId: 'u9',\n"
           "  subscriptionBalance: 10,\n  paymentBalance: 12\n}")
    msgs = [message(5, "r", f) + [app(9, "r", err, "ERROR")]]
    parsed = read_one(tmp_path, invocation(0, "r", msgs))
    e = parsed.sync_errors.row(0, named=True)
    assert (e["transactionId"], e["userId"], str(e["paymentBalance"].normalize())) == (f["id"], "u9", "12")


def test_json_form_is_merged_into_its_block_and_personal_fields_are_dropped(tmp_path):
    f = tx()
    json_form = ('transaction {"id":"%s","type":"DEBIT","userBalance":24.4,"name":"Jane Doe",'
                 '"email":"jane@example.com","phoneNumber":"+97300000000","paymentMethod":"cc"}' % f["id"])
    msgs = [[app(4, "r", "Processing message m"), app(5, "r", json_form)] + message(6, "r", f)[1:]]
    parsed = read_one(tmp_path, invocation(0, "r", msgs))
    assert parsed.transactions.height == 1
    row = parsed.transactions.row(0, named=True)
    assert row["jsonMerged"] and row["paymentMethod"] == "cc" and str(row["userBalance"].normalize()) == "24.4"
    everything = str(parsed.tables())
    assert "jane" not in everything.lower() and "+9730" not in everything


def test_a_json_form_without_its_block_is_a_reject_not_lost(tmp_path):
    records = invocation(0, "r", [[app(4, "r", "Processing message m"), app(5, "r", 'transaction {"id":"X1"}')]])
    parsed = read_one(tmp_path, records)
    assert parsed.rejects["kind"].to_list() == ["json_transaction"]


def test_old_shape_and_exact_money_text(tmp_path):
    f = tx(old_shape=True, amount="60.181000000000004", old="100", new="39.818999999999996")
    parsed = read_one(tmp_path, invocation(0, "r", [message(5, "r", f)]))
    row = parsed.transactions.row(0, named=True)
    assert row["shape"] == "old" and row["type"] is None and row["paymentBalance"] is None
    assert str(row["amount"].normalize()) == "60.181000000000004"


def test_other_records_are_events_with_their_kind(tmp_path):
    records = invocation(0, "r", [[app(1, "r", "Processing message m"),
                                   app(2, "r", "Skipping the balance sync for create subscription, it will be synced"),
                                   app(3, "r", "Skipping the process, Update Payment Balance Flag is set to false "
                                               "{ transactionAction: 'DONATE_RAMADAN_MEAL' }")]])
    records += ['2024-01-10T08:00:01.000Z {"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"apiService",'
                '"Dimensions":[["service"]],"Metrics":[{"Name":"negativeBalance","Unit":"Count"}]}]},'
                '"negativeBalance":1,"userId":"u1","action":"X"}',
                '2024-01-10T08:00:02.000Z 2024-01-10T08:00:02.000Z\tundefined\tERROR\tUncaught Exception \t'
                '{"errorType":"Error","errorMessage":"boom"}',
                "2024-01-10T08:00:03.000Z INIT_REPORT Init Duration: 766.09 ms\tPhase: invoke\tStatus: error\t"
                "Error Type: Runtime.ExitError"]
    parsed = read_one(tmp_path, records)
    kinds = dict(zip(*parsed.events.group_by("kind").len().sort("kind").to_dict(as_series=False).values()))
    assert kinds == {"crash": 1, "init_report": 1, "metric": 1, "report": 1, "skip_create_subscription": 1,
                     "skip_payment_flag_false": 1}
    ev = {r["kind"]: r for r in parsed.events.iter_rows(named=True)}
    assert ev["skip_payment_flag_false"]["action"] == "DONATE_RAMADAN_MEAL"
    assert ev["metric"]["metric"] == "negativeBalance" and ev["crash"]["errorType"] == "Error"
    assert ev["init_report"]["errorType"] == "Runtime.ExitError" and ev["report"]["durationMs"] == "12.50"


def test_the_same_file_dropped_twice_counts_once(tmp_path):
    simple_log(tmp_path / "a", [tx(), tx()])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.gz").write_bytes(next((tmp_path / "a").rglob("*.gz")).read_bytes())
    parsed = read_logs(tmp_path)
    assert parsed.transactions.height == 2
    assert parsed.files.filter(pl.col("status") == "duplicate")["path"].to_list() == ["b/copy.gz"]
    r = parsed.reconciliation()
    assert r["transaction_blocks_seen"] == 4 and r["duplicate_blocks_collapsed"] == 2


def test_overlapping_exports_collapse_repeated_records_across_drops(tmp_path):
    first = invocation(0, "r1", [message(5, "r1", tx(tx_id="T1"), message_id="m1")])
    second = invocation(2000, "r2", [message(2005, "r2", tx(tx_id="T2"), message_id="m2")])
    write_log(tmp_path / "one" / "a.log", first + second, compress=False)
    write_log(tmp_path / "two" / "b.log", second, compress=False)
    parts = [read_logs(tmp_path, only={"one/a.log"}), read_logs(tmp_path, only={"two/b.log"})]
    merged = combine(parts)
    assert sorted(merged.transactions["id"]) == ["T1", "T2"]
    assert dict(zip(merged.duplicates["table"], merged.duplicates["collapsed"]))["transactions"] == 1


def test_collapsed_counts_add_up_over_drops(tmp_path):
    """Each drop that collapsed duplicates keeps its count when drops are combined."""
    for drop in ("d1", "d2"):
        simple_log(tmp_path / drop / "a", [tx(tx_id=f"{drop}-T")])
        (tmp_path / drop / "b").mkdir()
        (tmp_path / drop / "b" / "copy.gz").write_bytes(next((tmp_path / drop / "a").rglob("*.gz")).read_bytes())
    parts = [read_logs(tmp_path / drop) for drop in ("d1", "d2")]
    merged = combine(parts)
    assert dict(zip(merged.duplicates["table"], merged.duplicates["collapsed"]))["transactions"] == 2
    r = merged.reconciliation()
    assert r["transaction_blocks_seen"] == r["transactions"] + r["duplicate_blocks_collapsed"] == 4


def test_groups_pieces_and_worker_processes_do_not_change_the_tables(tmp_path, monkeypatch):
    """However the files are grouped, cut into pieces or spread over processes, the tables are the same."""
    import calo_assets.files as files_module
    import calo_assets.reading as reading_module

    simple_log(tmp_path / "a", [tx(), tx(), tx()])
    simple_log(tmp_path / "b", [tx(), tx()])
    write_log(tmp_path / "c" / "plain.log", invocation(0, "r9", [message(5, "r9", tx()), message(9, "r9", tx())]),
              compress=False)
    whole = read_logs(tmp_path, workers=0)
    monkeypatch.setattr(reading_module, "GROUP_BYTES", 1)  # a group per file
    in_processes = read_logs(tmp_path, workers=2)
    monkeypatch.setattr(files_module, "PIECE", 64)  # a piece every few records
    cut_small = read_logs(tmp_path, workers=0)
    for name in ("transactions", "events", "rejects", "files", "record_counts", "duplicates"):
        assert in_processes.tables()[name].equals(whole.tables()[name]), name
        assert cut_small.tables()[name].equals(whole.tables()[name]), name
    assert whole.transactions.height == 7


def test_money_past_eighteen_places_is_rounded_half_up_and_type_undefined_is_no_type(tmp_path):
    f = tx(amount="40.0000000000000000005", old="100", new="60")
    f["type"] = UNDEFINED
    parsed = read_one(tmp_path, invocation(0, "r", [message(5, "r", f)]))
    row = parsed.transactions.row(0, named=True)
    assert str(row["amount"]) == "40.000000000000000001"  # half-up; Polars alone would round half-even to ...000
    assert row["type"] is None and row["shape"] == "old"


def test_a_json_form_logged_after_its_block_is_merged_too(tmp_path):
    f = tx()
    msgs = [message(5, "r", f) + [app(9, "r", 'transaction {"id":"%s","paymentMethod":"cc","name":"X Y"}' % f["id"])]]
    parsed = read_one(tmp_path, invocation(0, "r", msgs))
    row = parsed.transactions.row(0, named=True)
    assert row["jsonMerged"] and row["paymentMethod"] == "cc" and parsed.rejects.height == 0
