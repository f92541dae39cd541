SELECT soak.enroll_nobody();
