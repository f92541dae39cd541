-- Delete a user (its children go to the purge), and bring back another deleted one.
\set gone random(1, 5000)
\set back random(1, 5000)
DELETE FROM soak.users WHERE id = :gone;
SELECT soak.recreate(:back);
