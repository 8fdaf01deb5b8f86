//! The board's TypeScript types, generated from the `protocol` types it reads
//! (`assets/src/protocol.gen.ts`). The board's `api.ts` uses them, so `tsc` in the board
//! build type-checks the board against the Rust views; this test fails when the committed
//! file no longer matches them. Regenerate with
//! `VIBER_UPDATE_TS=1 cargo test --lib protocol::board_types`.

use ts_rs::{Config, TS};

use super::api::*;
use super::events::Event;
use super::*;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/src/protocol.gen.ts");

macro_rules! declarations {
    ($cfg:expr, $($t:ty),+ $(,)?) => {
        vec![$(<$t as TS>::decl($cfg)),+]
    };
}

fn generate() -> String {
    // Every integer the API sends fits a JavaScript number.
    let cfg = &Config::new().with_large_int("number");
    let decls = declarations!(
        cfg,
        TaskState,
        ExecutorKind,
        WorkingMode,
        InjectionMode,
        EnvKind,
        BindingStrategy,
        SecretScope,
        NetworkAccess,
        BindingStatus,
        BindingPhase,
        NodePresence,
        ValidationStatus,
        ConfigValidation,
        ConfigAck,
        ConfigPushed,
        CredentialKind,
        ThreadStatus,
        FileStatus,
        SyncMode,
        ChangedFile,
        WorktreeView,
        ThreadDiff,
        GitOutcome,
        PullRequestView,
        ErrorDetail,
        ErrorBody,
        AuditEntry,
        AuditPage,
        Health,
        NodeView,
        NodeList,
        PairingStatus,
        PairingRequestView,
        PairingList,
        ApproveRequest,
        PairingDecided,
        JobThreadMode,
        JobTrigger,
        CreateJob,
        UpdateJob,
        JobRunView,
        JobView,
        JobList,
        SharedConfig,
        UsageTotal,
        UsageRow,
        UsageDaily,
        UsageReport,
        SetShared,
        SessionOpened,
        SessionInfo,
        TaskUsage,
        PendingApproval,
        ChunkEvent,
        TaskView,
        TaskList,
        ApprovalScope,
        ApprovalAnswer,
        ApprovalAnswered,
        SecretView,
        BindingView,
        BindingList,
        EnvironmentView,
        EnvironmentList,
        LogLine,
        LogList,
        ValidationCheck,
        ValidationResult,
        ThreadView,
        ThreadList,
        MessageTask,
        FollowUpAccepted,
        ThreadMessageView,
        ThreadMessages,
        TerminalView,
        TerminalList,
        ViewerEvent,
        ViewerInput,
        Event,
    );
    let mut out = String::from(
        "// Generated from src/protocol by `VIBER_UPDATE_TS=1 cargo test --lib protocol::board_types`.\n\
         // Do not edit: change the Rust types and regenerate.\n\n",
    );
    for d in decls {
        out.push_str("export ");
        out.push_str(d.trim());
        out.push_str("\n\n");
    }
    out
}

#[test]
fn board_types_match_the_protocol() {
    let fresh = generate();
    if std::env::var_os("VIBER_UPDATE_TS").is_some() {
        std::fs::write(PATH, &fresh).expect("writing protocol.gen.ts");
        return;
    }
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        committed == fresh,
        "assets/src/protocol.gen.ts is out of date with src/protocol; regenerate it with \
         `VIBER_UPDATE_TS=1 cargo test --lib protocol::board_types` and fix the board where \
         tsc complains"
    );
}
