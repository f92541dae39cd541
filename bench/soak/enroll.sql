\set uid random(1, 5000)
SELECT soak.enroll(:uid);
