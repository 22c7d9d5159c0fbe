"""Trading: the reference trading floor built on the fabric.

Market data, algorithmic agents, SEC 15c3-5 pre-trade risk, smart order router,
venue matching, OMS, risk dashboard, settlement/treasury and a FIX 4.4 gateway;
each service its own segment and identity. Pure logic (order book, risk checks,
FIX session) is free of sockets and files.
"""
