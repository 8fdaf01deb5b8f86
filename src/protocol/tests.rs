//! The frames: every variant round-trips and is listed, fields are camelCase, decode
//! errors are typed.

use super::*;

/// One value of every frame variant. A plain list, kept in one piece so a new variant is
/// added in one place (the round-trip test checks every listed type has one).
fn samples() -> Vec<Frame> {
    vec![
        Frame::Challenge {
            nonce: "n".into(),
            protocol: 1,
            server_version: "0".into(),
        },
        Frame::Connect(Connect {
            min_protocol: 1,
            max_protocol: 1,
            role: Role::Node,
            node_id: "node_x".into(),
            name: "a".into(),
            version: "0".into(),
            platform: "linux".into(),
            capabilities: vec!["shell".into()],
            token: "t".into(),
            hostname: Some("host".into()),
            public_key: "k".into(),
            nonce: "n".into(),
            signature: "s".into(),
        }),
        Frame::HelloOk(HelloOk {
            protocol: 1,
            server_version: "0".into(),
            node_id: "node_x".into(),
            heartbeat_interval_ms: 1000,
            node_token: None,
        }),
        Frame::PairingPending(PairingPending {
            fingerprint: "node_x".into(),
            expires_at: "2026-12-01T00:00:00.000Z".into(),
            ping_interval_ms: 30_000,
        }),
        Frame::error(ErrorCode::BadFrame, "x"),
        Frame::Heartbeat {
            status: NodeStatus::default(),
        },
        Frame::Ping {},
        Frame::Pong {},
        Frame::TaskSubmit(TaskSubmit {
            task_id: "t".into(),
            goal: "echo".into(),
            executor: ExecutorKind::Shell,
            options: TaskOptions::default(),
            secrets: vec![],
        }),
        Frame::TaskStarted {
            task_id: "t".into(),
            seq: 0,
        },
        Frame::chunk("t", 1, &serde_json::json!({"type": "start"})),
        Frame::TaskStreamChunks {
            task_id: "t".into(),
            seq: 2,
            chunks: vec![
                serde_json::value::to_raw_value(
                    &serde_json::json!({"type": "text-start", "id": "a"}),
                )
                .unwrap(),
                serde_json::value::to_raw_value(
                    &serde_json::json!({"type": "text-end", "id": "a"}),
                )
                .unwrap(),
            ],
        },
        Frame::TaskProgress {
            task_id: "t".into(),
            event: serde_json::json!({}),
        },
        Frame::TaskCompleted {
            task_id: "t".into(),
            seq: 2,
            exit_code: Some(0),
            result: None,
        },
        Frame::TaskError {
            task_id: "t".into(),
            seq: 2,
            error: "x".into(),
            exit_code: None,
            stopped: false,
        },
        Frame::TaskAck {
            task_id: "t".into(),
            seq: 2,
        },
        Frame::TaskStop {
            task_id: "t".into(),
        },
        Frame::TaskMessage {
            task_id: "t".into(),
            message: "m".into(),
            injection_mode: InjectionMode::Steer,
            command_id: Some("c1".into()),
        },
        Frame::TaskApproval {
            task_id: "t".into(),
            approval_id: "a".into(),
            approved: true,
            reason: None,
            command_id: None,
        },
        Frame::CommandAck {
            command_id: "c1".into(),
            error: Some("no".into()),
        },
        Frame::EnvironmentPrepare(PrepareEnvironment {
            binding_id: "b".into(),
            environment_id: "e".into(),
            name: "n".into(),
            version: 1,
            source: EnvironmentSource {
                kind: EnvKind::Git,
                url: Some("file:///r".into()),
                branch: None,
                path: None,
            },
            strategy: BindingStrategy::Auto,
            path: None,
            working_dir: String::new(),
            setup_script: String::new(),
            vars: Default::default(),
            secrets: vec![],
            force: false,
            container: None,
        }),
        Frame::EnvironmentStatus(BindingState {
            binding_id: "b".into(),
            status: BindingStatus::Ready,
            step: None,
            message: None,
            working_dir: None,
            commit: None,
            version: 1,
            setup_skipped: false,
        }),
        Frame::EnvironmentLog {
            binding_id: "b".into(),
            text: "x".into(),
        },
        Frame::EnvironmentSync { bindings: vec![] },
        Frame::EnvironmentValidate(ValidateEnvironment {
            request_id: "r".into(),
            setup_script: "true".into(),
            repo_url: None,
            branch: None,
        }),
        Frame::EnvironmentValidated(ValidationReport {
            request_id: "r".into(),
            checks: vec![ValidationCheck {
                name: "setupScript".into(),
                ok: true,
                message: "syntax ok".into(),
                line: None,
            }],
        }),
        Frame::ConfigPush { command_id: None },
        Frame::ConfigAck(ConfigAck {
            config_version: "v".into(),
            validations: vec![],
        }),
        Frame::TerminalOpen(Box::new(terminal::TerminalOpen {
            terminal_id: "term_1".into(),
            binding_id: Some("b".into()),
            thread_id: None,
            command: vec![],
            cols: 80,
            rows: 24,
            persistent: true,
            echo: true,
            options: TaskOptions::default(),
            secrets: vec![],
        })),
        Frame::TerminalList {
            terminals: vec![terminal::TerminalState {
                terminal_id: "term_1".into(),
                running: true,
                exit_code: None,
                error: None,
                tmux: true,
                end_offset: 5,
                ports: vec![8000],
                adopted: false,
            }],
        },
        Frame::TerminalAttach {
            terminal_id: "term_1".into(),
            attachment_id: "a".into(),
            offset: 0,
        },
        Frame::TerminalDetach {
            terminal_id: "term_1".into(),
            attachment_id: "a".into(),
        },
        Frame::TerminalInput {
            terminal_id: "term_1".into(),
            data: terminal::Bytes64(b"ls\r".to_vec()),
        },
        Frame::TerminalResize {
            terminal_id: "term_1".into(),
            cols: 100,
            rows: 30,
        },
        Frame::TerminalOutput {
            terminal_id: "term_1".into(),
            attachment_id: "a".into(),
            offset: 3,
            data: terminal::Bytes64(vec![0, 255, 27]),
            skipped_from: Some(1),
        },
        Frame::TerminalExit {
            terminal_id: "term_1".into(),
            attachment_id: "a".into(),
            offset: Some(6),
            code: Some(0),
            error: None,
        },
        Frame::TerminalClose {
            terminal_id: "term_1".into(),
        },
        Frame::TunnelOpen {
            tunnel_id: "tun_1".into(),
            binding_id: "b".into(),
            port: 8000,
        },
        Frame::TunnelData {
            tunnel_id: "tun_1".into(),
            data: terminal::Bytes64(b"GET / HTTP/1.1\r\n".to_vec()),
        },
        Frame::TunnelClose {
            tunnel_id: "tun_1".into(),
            error: None,
        },
        Frame::WorktreeState(worktree::WorktreeState {
            thread_id: "thr_1".into(),
            branch: "viber/fix-1".into(),
            base_commit: "abc".into(),
            path: "/w/.worktrees/thr_1".into(),
        }),
        Frame::GitRequest(Box::new(worktree::GitRequest {
            request_id: "git_1".into(),
            thread_id: "thr_1".into(),
            branch: "viber/fix-1".into(),
            op: worktree::GitOp::Sync {
                url: "file:///r".into(),
                base_branch: "main".into(),
                mode: api::SyncMode::Merge,
            },
            author_name: Some("a".into()),
            author_email: Some("a@e".into()),
            secrets: vec![],
        })),
        Frame::GitResult(Box::new(worktree::GitResult {
            request_id: "git_1".into(),
            head: Some("def".into()),
            conflicts: vec!["same.txt".into()],
            ..Default::default()
        })),
    ]
}

#[test]
fn every_variant_round_trips_and_is_listed() {
    for frame in samples() {
        let text = frame.encode();
        let back = Frame::decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back.encode(), text);
        assert_eq!(back.type_name(), frame.type_name());
        assert!(FRAME_TYPES.contains(&frame.type_name()), "{text}");
    }
    // Every listed type (except aliases) is some variant's name.
    let names: Vec<_> = samples().iter().map(|f| f.type_name()).collect();
    for t in FRAME_TYPES {
        assert!(
            names.contains(t) || *t == "task:create",
            "{t} listed but no variant"
        );
    }
}

#[test]
fn fields_are_camel_case() {
    let text = Frame::chunk("t", 3, &serde_json::json!({"type": "start"})).encode();
    assert_eq!(
        text,
        r#"{"type":"task:stream-chunk","taskId":"t","seq":3,"chunk":{"type":"start"}}"#
    );
}

#[test]
fn task_create_is_an_alias_of_task_submit() {
    let f = Frame::decode(r#"{"type":"task:create","taskId":"t","goal":"ls"}"#).unwrap();
    match f {
        Frame::TaskSubmit(s) => {
            assert_eq!(s.goal, "ls");
            assert_eq!(s.executor, ExecutorKind::Shell);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn decode_errors_are_typed() {
    assert_eq!(Frame::decode("{").unwrap_err().code(), ErrorCode::BadFrame);
    assert_eq!(
        Frame::decode("[1]").unwrap_err().code(),
        ErrorCode::BadFrame
    );
    assert_eq!(
        Frame::decode(r#"{"x":1}"#).unwrap_err().code(),
        ErrorCode::BadFrame
    );
    assert_eq!(
        Frame::decode(r#"{"type":"nope"}"#).unwrap_err().code(),
        ErrorCode::UnknownType
    );
    assert_eq!(
        Frame::decode(r#"{"type":"task:ack","taskId":5}"#)
            .unwrap_err()
            .code(),
        ErrorCode::InvalidFrame
    );
}

/// A frame read in one pass and one read through a `Value` (the way a frame the one pass
/// refuses is read) come out the same, repeated keys included: the last one counts.
#[test]
fn frames_read_the_same_in_one_pass_or_through_a_value() {
    let beat = |v: &str| format!(r#"{{"runningTasks":["t1"],"version":"{v}"}}"#);
    let text = format!(r#"{{"type":"heartbeat","status":{}}}"#, beat("1"));
    let twice = format!(
        r#"{{"type":"heartbeat","status":{},"status":{}}}"#,
        beat("1"),
        beat("2")
    );
    for (text, version) in [(text, "1"), (twice, "2")] {
        let via_value: Frame =
            serde_json::from_value(serde_json::from_str::<Value>(&text).unwrap()).unwrap();
        let decoded = Frame::decode(&text).unwrap();
        assert_eq!(decoded.encode(), via_value.encode(), "{text}");
        match decoded {
            Frame::Heartbeat { status } => assert_eq!(status.version, version),
            other => panic!("{other:?}"),
        }
    }
}

/// Runs of one task's consecutive chunks fold into batches; anything else breaks a run and
/// keeps its place, and a batch keeps to its count and byte limits.
#[test]
fn chunk_runs_fold_into_batches() {
    let c = |task: &str, seq: u64| Frame::chunk(task, seq, &serde_json::json!({"n": seq}));
    let frames = vec![
        c("a", 0),
        c("a", 1),
        c("a", 2),
        Frame::Pong {},
        c("a", 3),
        c("b", 0),
        c("b", 1),
        c("b", 3),
    ];
    let out: Vec<String> = batch_chunks(frames).iter().map(Frame::encode).collect();
    assert_eq!(
        out,
        [
            r#"{"type":"task:stream-chunks","taskId":"a","seq":0,"chunks":[{"n":0},{"n":1},{"n":2}]}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":"task:stream-chunk","taskId":"a","seq":3,"chunk":{"n":3}}"#,
            r#"{"type":"task:stream-chunks","taskId":"b","seq":0,"chunks":[{"n":0},{"n":1}]}"#,
            r#"{"type":"task:stream-chunk","taskId":"b","seq":3,"chunk":{"n":3}}"#,
        ]
    );
    // Count limit.
    let many: Vec<Frame> = (0..MAX_BATCH_CHUNKS as u64 + 5)
        .map(|s| c("a", s))
        .collect();
    let out = batch_chunks(many);
    assert_eq!(out.len(), 2);
    match &out[1] {
        Frame::TaskStreamChunks { seq, chunks, .. } => {
            assert_eq!((*seq, chunks.len()), (MAX_BATCH_CHUNKS as u64, 5))
        }
        other => panic!("{other:?}"),
    }
    // Byte limit: three chunks of 40% of the budget make a batch of two and a single.
    let big = "x".repeat(MAX_BATCH_BYTES * 2 / 5);
    let out = batch_chunks((0..3).map(|s| Frame::chunk("a", s, &big)).collect());
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|f| f.encode().len() < MAX_FRAME_BYTES));
    assert_eq!(out[1].type_name(), "task:stream-chunk");
}

#[test]
fn bad_batches_are_refused() {
    for text in [
        r#"{"type":"task:stream-chunks","taskId":"t","seq":0,"chunks":[]}"#,
        r#"{"type":"task:stream-chunks","taskId":"t","seq":0}"#,
        r#"{"type":"task:stream-chunks","taskId":"t","seq":0,"chunk":{}}"#,
        r#"{"type":"task:stream-chunk","taskId":"t","seq":0,"chunks":[{}]}"#,
        r#"{"type":"task:stream-chunks","taskId":"t","seq":18446744073709551615,"chunks":[{},{}]}"#,
        r#"{"type":"task:stream-chunks","taskId":"t","seq":-1,"chunks":[{}]}"#,
    ] {
        let e = Frame::decode(text).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidFrame, "{text}: {e}");
    }
    let too_many = format!(
        r#"{{"type":"task:stream-chunks","taskId":"t","seq":0,"chunks":[{}]}}"#,
        vec!["{}"; MAX_BATCH_CHUNKS + 1].join(",")
    );
    assert_eq!(
        Frame::decode(&too_many).unwrap_err().code(),
        ErrorCode::InvalidFrame
    );
}

/// The gateway answers with the newest revision both sides speak, and refuses a node with
/// none in common.
#[test]
fn protocol_revisions_are_negotiated() {
    assert_eq!(negotiate(1, 1), Some(1));
    assert_eq!(negotiate(1, 2), Some(PROTOCOL_VERSION.min(2)));
    assert_eq!(negotiate(1, 99), Some(PROTOCOL_VERSION));
    assert_eq!(negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3), None);
    assert_eq!(negotiate(0, 0), None);
    assert_eq!(negotiate(2, 1), None);
}
