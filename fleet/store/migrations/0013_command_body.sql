-- the fields a CONFIG downlink set (JSON), so the node page and the audit log show all of
-- them, not only the interval kept in `arg`.
ALTER TABLE commands ADD COLUMN body TEXT;
