//! Wire enums as SQLite TEXT: every enum column is written and read through its wire name,
//! so a value that the schema's CHECK constraint or this build does not know is an error at
//! the row, never a string that the rest of the code compares by hand.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::protocol::api::{JobThreadMode, JobTrigger, PairingStatus, ThreadStatus};
use crate::protocol::{
    BindingStatus, BindingStrategy, EnvKind, ExecutorKind, InjectionMode, NetworkAccess,
    SecretScope, TaskState,
};

macro_rules! text_column {
    ($($t:ty),+ $(,)?) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

text_column!(
    TaskState,
    ExecutorKind,
    InjectionMode,
    EnvKind,
    SecretScope,
    BindingStrategy,
    BindingStatus,
    ThreadStatus,
    NetworkAccess,
    PairingStatus,
    JobThreadMode,
    JobTrigger,
);
