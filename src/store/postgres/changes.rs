//! `catalog_changes`: every catalog write notes its ids there (and sends
//! `NOTIFY tollgate_catalog`) in its own transaction, so that the other
//! instances follow it ([`Shared`](crate::store::shared::Shared)).

use tokio_postgres::GenericClient;

use crate::store::StoreError;

/// Held (for its transaction) by whoever writes the catalog.
const CATALOG_LOCK: i64 = 0x0063_6174_616c_6f67; // "catalog"

/// Notes catalog writes for the other instances: one change row per id,
/// and a notice, both taking effect when the transaction commits.
pub(super) async fn changed(
    c: &impl GenericClient,
    kind: &str,
    ids: &[&str],
    origin: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    // One catalog writer at a time across instances: versions then commit
    // in their order, so a follower reading past version v never misses
    // one below it.
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK])
        .await?;
    c.execute(
        "INSERT INTO catalog_changes (kind, id, origin) SELECT $1, unnest($2::text[]), $3",
        &[&kind, &ids, &origin],
    )
    .await?;
    c.execute("SELECT pg_notify('tollgate_catalog', '')", &[])
        .await?;
    Ok(())
}
