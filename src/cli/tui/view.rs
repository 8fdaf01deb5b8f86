//! Drawing the dashboard: the main screen (environments, their threads, nodes) or an open
//! thread (its conversation, the live output of its running task, an approval to answer),
//! with a status line and the keys that apply. Fits 80x24.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Pane, Purpose, ThreadScreen};
use crate::protocol::api::NodePresence;
use crate::protocol::TaskState;

fn state_style(s: Option<TaskState>) -> Style {
    match s {
        Some(TaskState::Running) | Some(TaskState::Pending) => Style::new().fg(Color::Cyan),
        Some(TaskState::Completed) => Style::new().fg(Color::Green),
        Some(TaskState::Error) => Style::new().fg(Color::Red),
        Some(TaskState::Stopped) => Style::new().fg(Color::Yellow),
        None => Style::new().fg(Color::DarkGray),
    }
}

fn pane_block(title: &str, focused: bool) -> Block<'_> {
    let b = Block::bordered().title(title);
    if focused {
        b.border_style(Style::new().fg(Color::Cyan))
    } else {
        b
    }
}

pub fn draw(f: &mut Frame, app: &App) {
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(if app.input.is_some() { 3 } else { 1 }),
    ])
    .areas(f.area());
    title_bar(f, top, app);
    match &app.thread {
        Some(t) => thread_screen(f, body, app, t),
        None => main_screen(f, body, app),
    }
    footer(f, bottom, app);
}

fn title_bar(f: &mut Frame, area: Rect, app: &App) {
    let online = app
        .nodes
        .iter()
        .filter(|n| n.status == NodePresence::Online)
        .count();
    let waiting = app.threads.iter().filter(|t| app.thread_awaits(t)).count();
    let mut spans = vec![
        Span::styled("viber ", Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(
            if app.live { "● " } else { "○ " },
            Style::new().fg(if app.live { Color::Green } else { Color::Red }),
        ),
        Span::raw(format!(
            "{} · {online}/{} nodes online",
            app.gateway,
            app.nodes.len()
        )),
    ];
    if waiting > 0 {
        spans.push(Span::styled(
            format!(" · {waiting} awaiting approval"),
            Style::new().fg(Color::Yellow),
        ));
    }
    f.render_widget(Line::from(spans), area);
}

fn main_screen(f: &mut Frame, area: Rect, app: &App) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(34), Constraint::Min(20)]).areas(area);
    let [envs_area, nodes_area] =
        Layout::vertical([Constraint::Percentage(60), Constraint::Min(3)]).areas(left);
    let pane = app.pane();

    let envs: Vec<ListItem> = app
        .envs
        .iter()
        .map(|e| {
            let ready = e.bindings.iter().any(|b| b.status.as_str() == "ready");
            ListItem::new(Line::from(vec![
                Span::raw(e.name.clone()),
                Span::styled(
                    if ready { " ready" } else { "" },
                    Style::new().fg(Color::Green),
                ),
            ]))
        })
        .collect();
    list(
        f,
        envs_area,
        "Environments",
        envs,
        app.env_sel,
        pane == Pane::Environments,
    );

    let nodes: Vec<ListItem> = app
        .nodes
        .iter()
        .map(|n| {
            let online = n.status == NodePresence::Online;
            ListItem::new(Line::from(vec![
                Span::styled(
                    if online { "● " } else { "○ " },
                    Style::new().fg(if online {
                        Color::Green
                    } else {
                        Color::DarkGray
                    }),
                ),
                Span::raw(n.name.clone()),
                Span::styled(
                    format!(" {} running", n.running_tasks.len()),
                    Style::new().fg(Color::DarkGray),
                ),
            ]))
        })
        .collect();
    list(
        f,
        nodes_area,
        "Nodes",
        nodes,
        app.node_sel,
        pane == Pane::Nodes,
    );

    threads_pane(f, right, app, pane == Pane::Threads);
}

/// The selected environment's threads, each with its latest state.
fn threads_pane(f: &mut Frame, right: Rect, app: &App, focused: bool) {
    let title = match app.selected_env() {
        Some(e) => format!("Threads of {}", e.name),
        None => "Threads".into(),
    };
    let threads: Vec<ListItem> = app
        .env_threads()
        .into_iter()
        .map(|t| {
            let state = if app.thread_awaits(t) {
                Span::styled(" awaiting approval", Style::new().fg(Color::Yellow))
            } else {
                Span::styled(
                    t.last_task_state
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default(),
                    state_style(t.last_task_state),
                )
            };
            ListItem::new(Line::from(vec![Span::raw(t.title.clone()), state]))
        })
        .collect();
    if threads.is_empty() {
        let hint = Paragraph::new("No threads yet: press n to start one.")
            .block(pane_block(&title, focused));
        f.render_widget(hint, right);
    } else {
        list(f, right, &title, threads, app.thread_sel, focused);
    }
}

fn list(f: &mut Frame, area: Rect, title: &str, items: Vec<ListItem>, sel: usize, focused: bool) {
    let mut state = ListState::default().with_selected((!items.is_empty()).then_some(sel));
    let w = List::new(items)
        .block(pane_block(title, focused))
        .highlight_style(if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        });
    f.render_stateful_widget(w, area, &mut state);
}

fn thread_screen(f: &mut Frame, area: Rect, app: &App, t: &ThreadScreen) {
    let approval_height = if t.awaiting.is_some() { 4 } else { 0 };
    let [convo, approval] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(approval_height)]).areas(area);
    let mut text = Text::default();
    for m in &t.messages {
        text.push_line(Line::styled(
            format!("> {}", m.message),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let state = m.task.as_ref().map(|k| k.state);
        let live = t.live_task.as_deref() == Some(&m.task_id);
        let out = if live {
            t.live.as_str()
        } else {
            m.output.as_deref().unwrap_or("")
        };
        for l in out.lines() {
            text.push_line(Line::raw(l.to_string()));
        }
        if let Some(s) = state {
            let mut line = format!("[{s}]");
            if let Some(e) = m.task.as_ref().and_then(|k| k.error.as_deref()) {
                line.push(' ');
                line.push_str(e);
            }
            text.push_line(Line::styled(line, state_style(Some(s))));
        }
        text.push_line(Line::raw(""));
    }
    let inner_height = convo.height.saturating_sub(2);
    let width = convo.width.saturating_sub(2).max(1) as usize;
    // Wrapped height, roughly: enough to keep the end in view.
    let total: usize = text
        .lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(width))
        .sum();
    let bottom = (total.min(u16::MAX as usize) as u16).saturating_sub(inner_height);
    let scroll = bottom.saturating_sub(t.scroll_up);
    let title = app
        .threads
        .iter()
        .find(|x| x.id == t.id)
        .map(|x| x.title.clone())
        .unwrap_or_else(|| t.title.clone());
    let p = Paragraph::new(text)
        .block(pane_block(&title, true))
        .wrap(Wrap { trim: false })
        .scroll((scroll, 0));
    f.render_widget(p, convo);
    if let Some((_, a)) = &t.awaiting {
        let body = vec![
            Line::from(vec![
                Span::styled("Approval needed: ", Style::new().fg(Color::Yellow)),
                Span::raw(format!(
                    "{} {}",
                    a.tool_name.as_deref().unwrap_or("tool"),
                    a.input
                )),
            ]),
            Line::styled("a approve · d deny", Style::new().fg(Color::Yellow)),
        ];
        let w = Paragraph::new(body)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().border_style(Style::new().fg(Color::Yellow)));
        f.render_widget(w, approval);
    }
}

fn footer(f: &mut Frame, area: Rect, app: &App) {
    if let Some(input) = &app.input {
        let label = match &input.purpose {
            Purpose::NewThread { .. } => "New thread, first message",
            Purpose::Message { .. } => "Message",
        };
        let w = Paragraph::new(format!("{}▏", input.text))
            .block(Block::bordered().title(format!("{label} (Enter sends, Esc cancels)")));
        f.render_widget(w, area);
        return;
    }
    let keys = if app.thread.is_some() {
        "m message · a/d approve/deny · t terminal · ↑↓ scroll · Esc back"
    } else {
        "Tab pane · ↑↓ move · Enter open · n new thread · r reload · q quit"
    };
    let line = if app.status.is_empty() {
        Line::styled(keys, Style::new().fg(Color::DarkGray))
    } else {
        Line::from(vec![
            Span::styled(app.status.clone(), Style::new().fg(Color::Yellow)),
            Span::styled(format!("  {keys}"), Style::new().fg(Color::DarkGray)),
        ])
    };
    f.render_widget(line, area);
}
