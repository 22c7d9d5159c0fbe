"""FIX gateway core: FIX events <-> floor messages, its own refusals, and FIX replies."""

from trustfabric.trading.fix import session as fs
from trustfabric.trading.gateway import FixGatewayCore, floor_id
from trustfabric.trading.messages import CancelOrder, ExecutionReport, NewOrder, Reject, ReplaceOrder

ID = "spiffe://test.acme/clients/c1"
T = 1_790_000_000_000_000_000


def nos(cl="o1", qty=100, price=1_000_000, sender="C1"):
    return fs.FixNewOrderSingle(sender=sender, seq=2, cl_ord_id=cl, account="ACC", symbol="AAPL", side="buy",
                                qty=qty, price=price, tif="day")


def test_new_order_goes_to_risk_under_the_client_identity_and_a_namespaced_id():
    gw = FixGatewayCore()
    out = gw.on_session_event(nos(), ID, T)
    [order] = out.to_risk
    assert isinstance(order, NewOrder) and order.agent == ID and order.cl_ord_id == floor_id("C1", "o1")
    assert out.replies == ()


def test_duplicate_clordid_is_refused_at_the_gateway():
    gw = FixGatewayCore()
    gw.on_session_event(nos(), ID, T)
    out = gw.on_session_event(nos(qty=5), ID, T)
    assert out.to_risk == () and out.replies[0].get(39) == b"8"
    assert gw.orders[floor_id("C1", "o1")].open


def test_cancel_and_replace_of_unknown_or_foreign_orders_get_order_cancel_reject():
    gw = FixGatewayCore()
    out = gw.on_session_event(fs.FixCancelRequest(sender="C1", cl_ord_id="c1", orig_cl_ord_id="nope",
                                                  symbol="AAPL", side="buy"), ID, T)
    assert out.to_risk == () and out.replies[0].message_type == b"9" and out.replies[0].get(434) == b"1"
    gw.on_session_event(nos(), ID, T)
    other = gw.on_session_event(fs.FixReplaceRequest(sender="C1", cl_ord_id="r1", orig_cl_ord_id="o1",
                                                     account="ACC", symbol="AAPL", side="buy", qty=1, price=1),
                                "spiffe://test.acme/clients/other", T)
    assert other.to_risk == () and other.replies[0].get(434) == b"2"


def test_cancel_replace_and_mass_cancel_of_live_orders_go_to_risk():
    gw = FixGatewayCore()
    gw.on_session_event(nos("o1"), ID, T)
    gw.on_session_event(nos("o2"), ID, T)
    [cancel] = gw.on_session_event(fs.FixCancelRequest(sender="C1", cl_ord_id="c1", orig_cl_ord_id="o1",
                                                       symbol="AAPL", side="buy"), ID, T).to_risk
    assert isinstance(cancel, CancelOrder) and cancel.orig_cl_ord_id == floor_id("C1", "o1")
    [replace] = gw.on_session_event(fs.FixReplaceRequest(sender="C1", cl_ord_id="r2", orig_cl_ord_id="o2",
                                                         account="ACC", symbol="AAPL", side="buy", qty=50,
                                                         price=999_900), ID, T).to_risk
    assert isinstance(replace, ReplaceOrder) and replace.qty == 50
    out = gw.on_session_event(fs.FixMassCancelRequest(sender="C1", cl_ord_id="m1", request_type="7"), ID, T)
    assert len(out.to_risk) == 3 and out.replies[0].message_type == b"r" and out.replies[0].get(533) == b"3"


def test_reports_and_rejects_flow_back_to_the_right_client():
    gw = FixGatewayCore()
    gw.on_session_event(nos(), ID, T)
    fid = floor_id("C1", "o1")
    report = ExecutionReport(cl_ord_id=fid, order_id="OMS:x", exec_id="e1", venue="", account="ACC", agent=ID,
                             symbol="AAPL", side="buy", exec_type="fill", ord_status="filled", order_qty=100,
                             price=1_000_000, last_qty=100, last_px=1_000_000, cum_qty=100)
    sender, msg = gw.on_report(report)
    assert sender == "C1" and msg.get(11) == b"o1" and msg.get(39) == b"2"
    assert not gw.orders[fid].open
    status = gw.on_session_event(fs.FixStatusRequest(sender="C1", cl_ord_id="o1", symbol="AAPL", side="buy"), ID, T)
    assert status.replies[0].get(150) == b"I" and status.replies[0].get(39) == b"2"
    unknown = gw.on_session_event(fs.FixStatusRequest(sender="C1", cl_ord_id="zz", symbol="AAPL", side="buy"), ID, T)
    assert unknown.replies[0].get(39) == b"8"
    gw.on_session_event(nos("o9"), ID, T)
    sender, msg = gw.on_reject(Reject(ref_id=floor_id("C1", "o9"), reason="risk.price_collar"), T)
    assert msg.get(150) == b"8" and msg.get(58) == b"risk.price_collar" and msg.get(11) == b"o9"
    assert gw.on_reject(Reject(ref_id="someone-else", reason="x"), T) is None
    assert gw.on_report(report.__class__(**{**{f: getattr(report, f) for f in report.__struct_fields__},
                                            "cl_ord_id": "unknown"})) is None


def test_refused_cancel_becomes_order_cancel_reject():
    gw = FixGatewayCore()
    gw.on_session_event(nos(), ID, T)
    gw.on_session_event(fs.FixCancelRequest(sender="C1", cl_ord_id="c1", orig_cl_ord_id="o1", symbol="AAPL",
                                            side="buy"), ID, T)
    sender, msg = gw.on_reject(Reject(ref_id=floor_id("C1", "c1"), reason="risk.unknown_order"), T)
    assert msg.message_type == b"9" and msg.get(11) == b"c1" and msg.get(41) == b"o1"
