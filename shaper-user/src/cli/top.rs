//! `shaper top`: a live terminal view of one interface's tenants, refreshed every second:
//! tier, configured rate, passed and offered rates with a sparkline of the passed rate, drops.
//! Reads the agent's API (`/run/shaper/IF/api.addr`) and falls back to the pinned maps when
//! the agent is down. Keys: `q` quits, `s` cycles the sort, `/` filters by name, Esc clears.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use crate::cli::stats::{collect_report, only_running_iface};
use shaper::agent::StateDir;
use shaper::api::TenantView;
use shaper::units::human_bits;

/// Samples of history per tenant (one a refresh).
const HISTORY: usize = 60;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    Name,
    Passed,
    Offered,
    Drops,
}

impl SortBy {
    fn next(self) -> SortBy {
        match self {
            SortBy::Name => SortBy::Passed,
            SortBy::Passed => SortBy::Offered,
            SortBy::Offered => SortBy::Drops,
            SortBy::Drops => SortBy::Name,
        }
    }
}

/// A sparkline of `values` scaled to their maximum, `width` characters, newest on the right.
pub fn sparkline(values: &VecDeque<f64>, width: usize) -> String {
    let max = values.iter().copied().fold(0.0, f64::max);
    let start = values.len().saturating_sub(width);
    let mut s: String = values
        .iter()
        .skip(start)
        .map(|v| {
            if max > 0.0 {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            } else {
                BARS[0]
            }
        })
        .collect();
    while s.chars().count() < width {
        s.insert(0, ' ');
    }
    s
}

/// Where the rows come from this refresh.
fn fetch(iface: &str, window: Duration) -> Result<(Vec<TenantView>, &'static str)> {
    if let Some(addr) = StateDir::new(iface).api_addr()
        && let Ok(tenants) = from_api(addr)
    {
        return Ok((tenants, "agent API"));
    }
    Ok((
        collect_report(iface, window)?.tenants,
        "pinned maps (agent down)",
    ))
}

fn from_api(addr: std::net::SocketAddr) -> Result<Vec<TenantView>> {
    let (_, body) = shaper::api::request(addr, "GET", "/v1/stats", None)?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(serde_json::from_value(v["tenants"].clone())?)
}

pub fn execute(iface: Option<&str>, refresh: Duration) -> Result<()> {
    let iface = match iface {
        Some(i) => i.to_string(),
        None => only_running_iface()?,
    };
    // Fail before taking over the terminal if there is nothing to show.
    fetch(&iface, Duration::from_millis(100))?;
    let mut terminal = ratatui::init();
    let result = run(&mut terminal, &iface, refresh);
    ratatui::restore();
    result
}

/// What the view shows and how: rows, their recent history, sort and filter.
struct View {
    history: HashMap<String, VecDeque<f64>>,
    sort: SortBy,
    filter: String,
    /// The filter is being typed.
    typing: bool,
    rows: Vec<TenantView>,
    source: &'static str,
}

fn run(terminal: &mut ratatui::DefaultTerminal, iface: &str, refresh: Duration) -> Result<()> {
    let mut v = View {
        history: HashMap::new(),
        sort: SortBy::Passed,
        filter: String::new(),
        typing: false,
        rows: Vec::new(),
        source: "",
    };
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            next = Instant::now() + refresh;
            let (r, s) = fetch(iface, Duration::from_millis(200))?;
            v.refresh(r, s);
        }
        terminal.draw(|f| v.draw(f, iface))?;
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        if event::poll(wait)?
            && let Event::Key(k) = event::read()?
            && k.kind == KeyEventKind::Press
            && v.key(k.code)
        {
            return Ok(());
        }
    }
}

impl View {
    fn refresh(&mut self, rows: Vec<TenantView>, source: &'static str) {
        self.source = source;
        for t in &rows {
            let h = self.history.entry(t.name.to_string()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(t.passed_bps);
        }
        self.rows = rows;
    }

    /// The rows that pass the filter, sorted.
    fn shown(&self) -> Vec<&TenantView> {
        let mut shown: Vec<&TenantView> = self
            .rows
            .iter()
            .filter(|t| t.name.contains(self.filter.as_str()))
            .collect();
        match self.sort {
            SortBy::Name => shown.sort_by(|a, b| a.name.cmp(&b.name)),
            SortBy::Passed => shown.sort_by(|a, b| b.passed_bps.total_cmp(&a.passed_bps)),
            SortBy::Offered => shown.sort_by(|a, b| b.offered_bps.total_cmp(&a.offered_bps)),
            SortBy::Drops => shown.sort_by(|a, b| b.drop_ratio.total_cmp(&a.drop_ratio)),
        }
        shown
    }

    fn draw(&self, f: &mut ratatui::Frame, iface: &str) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(f.area());
        f.render_widget(
            Paragraph::new(format!(
                "shaper top  iface {iface}  source: {}  sort: {:?}  filter: {}",
                self.source, self.sort, self.filter
            )),
            head,
        );
        let header = Row::new([
            "tenant",
            "tier",
            "rate",
            "passed/s",
            "offered/s",
            "drop%",
            "passed, last 60 s",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD));
        let table_rows = self.shown().into_iter().map(|t| {
            let spark = self
                .history
                .get(&*t.name)
                .map(|h| sparkline(h, 30))
                .unwrap_or_default();
            Row::new([
                t.name.to_string(),
                t.tier.to_string(),
                human_bits(t.rate_bits as f64),
                human_bits(t.passed_bps),
                human_bits(t.offered_bps),
                format!("{:.1}", t.drop_ratio * 100.0),
                spark,
            ])
        });
        let widths = [
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(13),
            Constraint::Length(13),
            Constraint::Length(13),
            Constraint::Length(6),
            Constraint::Length(31),
        ];
        f.render_widget(
            Table::new(table_rows, widths)
                .header(header)
                .block(Block::bordered()),
            body,
        );
        let help = if self.typing {
            format!("filter: {}_  (Enter to apply, Esc to clear)", self.filter)
        } else {
            "q quit   s sort   / filter   Esc clear filter".to_string()
        };
        f.render_widget(Paragraph::new(Line::from(help)), foot);
    }

    /// Handles a key; true when it asks to quit.
    fn key(&mut self, code: KeyCode) -> bool {
        match (self.typing, code) {
            (true, KeyCode::Enter) => self.typing = false,
            (true, KeyCode::Esc) => {
                self.typing = false;
                self.filter.clear();
            }
            (true, KeyCode::Backspace) => {
                self.filter.pop();
            }
            (true, KeyCode::Char(c)) => self.filter.push(c),
            (false, KeyCode::Char('q')) => return true,
            (false, KeyCode::Char('s')) => self.sort = self.sort.next(),
            (false, KeyCode::Char('/')) => self.typing = true,
            (false, KeyCode::Esc) => self.filter.clear(),
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_maximum_and_pads_left() {
        let v: VecDeque<f64> = [0.0, 50.0, 100.0].into_iter().collect();
        assert_eq!(sparkline(&v, 5), "  ▁▅█");
        let flat: VecDeque<f64> = [0.0, 0.0].into_iter().collect();
        assert_eq!(sparkline(&flat, 2), "▁▁");
        let long: VecDeque<f64> = (0..100).map(f64::from).collect();
        assert_eq!(sparkline(&long, 10).chars().count(), 10);
    }
}
