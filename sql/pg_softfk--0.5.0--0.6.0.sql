-- pg_softfk 0.5.0 -> 0.6.0.
--
-- A large backlog's first pass reads each child once in physical order (src/purge/scan.rs):
-- the queue records where such a pass goes on. Adding nullable columns rewrites nothing.
-- Everything here is what a fresh install of 0.6.0 has (tests/tap/009_upgrade.pl compares
-- the two).
ALTER TABLE softfk.deletion
    ADD COLUMN scan_reference bigint,
    ADD COLUMN scan_table    regclass,
    ADD COLUMN scan_block    bigint;
