//! SPI, as pg_softfk uses it: read-only queries that give the transaction no id, and result
//! columns read by name, so that a query and the code reading it cannot drift apart.

use pgrx::datum::{DatumWithOid, FromDatum, IntoDatum};
use pgrx::spi::{SpiHeapTupleData, SpiTupleTable};
use pgrx::Spi;

/// The first column of the first row of a read-only query (None for no row or NULL). Unlike
/// `Spi::get_one`, it does not give the transaction an id: an idle worker's polling writes no
/// WAL and burns no transaction ids.
pub fn read_one<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect(|client| {
        let rows = client
            .select(sql, None, args)
            .expect("running a read-only query");
        if rows.is_empty() {
            return None;
        }
        rows.first().get::<T>(1).expect("reading a query result")
    })
}

/// Result columns read by name: `row.column::<i64>("id")` (None for NULL). A missing column
/// or a type that does not match is a bug in the query next to the call: it panics, naming
/// the column.
pub trait Columns {
    fn column<T: FromDatum + IntoDatum>(&self, name: &str) -> Option<T>;
}

impl Columns for SpiHeapTupleData<'_> {
    fn column<T: FromDatum + IntoDatum>(&self, name: &str) -> Option<T> {
        self.get_by_name::<T, _>(name)
            .unwrap_or_else(|error| panic!("result column \"{name}\": {error}"))
    }
}

/// The current row of a result (after `first()`).
impl Columns for SpiTupleTable<'_> {
    fn column<T: FromDatum + IntoDatum>(&self, name: &str) -> Option<T> {
        self.get_by_name::<T, _>(name)
            .unwrap_or_else(|error| panic!("result column \"{name}\": {error}"))
    }
}
