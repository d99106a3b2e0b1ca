-- a bad frame keeps only a prefix of its payload (ingest.BAD_PAYLOAD_KEPT) and the size it
-- had; NULL for rows stored whole before this version.
ALTER TABLE bad_frames ADD COLUMN size INTEGER;
