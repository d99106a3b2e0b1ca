-- when the periodic work (fleet/upkeep.py) last ran each task, so pages can say how
-- fresh the alerts are without evaluating them inside a GET.
CREATE TABLE upkeep (
    task TEXT PRIMARY KEY,
    at REAL NOT NULL,
    detail TEXT
);
