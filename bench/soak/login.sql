-- The hot path that must stay cheap: an UPDATE of the users table that keeps the key.
\set uid random(1, 5000)
UPDATE soak.users SET last_login = now() WHERE id = :uid;
