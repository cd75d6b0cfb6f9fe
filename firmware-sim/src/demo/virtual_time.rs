//! `firmware-sim demo --virtual`: a short, readable scenario of ccedge's core on virtual time.
//!
//! A CRM publishes an outage announcement; twenty calls arrive from a gateway; callers
//! listen, barge in, book callbacks (confirming their number or keying another), one hangs
//! up, one cancels while ringing; the MQTT broker is down for half a minute and the outbox
//! drains after it. It runs on the simulator's machinery (`crate::sim`) with no faults other
//! than the broker outage, prints what each caller heard and did and what the CRM received,
//! and exits 1 if anything is not as expected. (Plain `firmware-sim demo` runs the real
//! agent instead.)

use std::process::ExitCode;

use shared::announce::{Announcement, Language, Scope};
use shared::event::EventKind;
use shared::ids::AnnouncementId;
use shared::number::PhoneNumber;
use shared::time::Duration;

use crate::gateway::uac::Offer;
use crate::sim::caller::{Intent, Plan};
use crate::sim::{run_scenario, Scenario, ScenarioOutcome, DIALLED};

const OUTAGE_FROM_S: u64 = 15;
const OUTAGE_TO_S: u64 = 45;

fn plan(n: u64, intent: Intent) -> Plan {
    Plan {
        caller: Some(format!("121555501{n:02}")),
        dialled: DIALLED[0].to_string(),
        offer: if n.is_multiple_of(5) {
            Offer::PcmaOnly
        } else {
            Offer::Standard
        },
        intent,
        barge_in: false,
        keyed: format!("4420794600{n:02}"),
        bad_number_first: false,
        patience: None,
        cancel_after: None,
        hold: None,
        die_after: None,
    }
}

fn scenario() -> Scenario {
    let book = Intent::Callback { confirm: true };
    let other = Intent::Callback { confirm: false };
    let mut plans = Vec::new();
    for n in 1..=20u64 {
        let mut p = plan(
            n,
            match n {
                2 | 3 | 10 | 14 | 17 => book,
                4 | 12 | 19 => other,
                8 => other,
                5 | 16 => Intent::HearAgain,
                9 => Intent::Invalid,
                _ => Intent::Listen,
            },
        );
        match n {
            2 | 10 | 17 | 19 => p.barge_in = true,
            6 => p.patience = Some(Duration::from_secs(6)),
            7 => p.cancel_after = Some(Duration::from_millis(400)),
            8 => p.caller = None,
            11 => p.hold = Some((Duration::from_secs(3), Duration::from_secs(2))),
            12 => p.bad_number_first = true,
            _ => {}
        }
        plans.push((Duration::from_millis(2_000 + (n - 1) * 1_500), p));
    }
    let mut a = Announcement::new(
        AnnouncementId::new("outage-phl").unwrap_or_else(|_| unreachable!("valid id")),
        1,
    );
    a.priority = 10;
    let mut scope = Scope::default();
    if let Ok(d) = PhoneNumber::parse(DIALLED[0]) {
        let _ = scope.dialled.push(d);
    }
    a.scope = scope;
    a.audio = Some([0x5a; 32]);
    a.has_text = true;
    a.offer_callback = true;
    a.language = Language::try_from("en").unwrap_or_default();
    Scenario {
        plans,
        outage: (
            Duration::from_secs(OUTAGE_FROM_S),
            Duration::from_secs(OUTAGE_TO_S),
        ),
        answer_delay: Duration::from_millis(1_000),
        announcement: a,
    }
}

/// Runs the demo; exit 0 when everything happened as expected.
pub(crate) fn main() -> ExitCode {
    match run_scenario(scenario()) {
        Ok(out) => {
            let (text, problems) = report(&out);
            print!("{text}");
            if problems.is_empty() {
                println!("demo: OK");
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    println!("demo: UNEXPECTED: {p}");
                }
                ExitCode::FAILURE
            }
        }
        Err(f) => {
            println!("demo: {f}");
            ExitCode::FAILURE
        }
    }
}

fn masked(n: &Option<String>) -> String {
    match n.as_deref().map(PhoneNumber::parse) {
        Some(Ok(p)) => p.masked().to_string(),
        _ => "anonymous".to_string(),
    }
}

/// The readable report and the list of unexpected findings.
fn report(out: &ScenarioOutcome) -> (String, Vec<String>) {
    use core::fmt::Write as _;
    let mut o = String::new();
    let mut problems = Vec::new();
    let s = &out.summary;
    let _ = writeln!(
        o,
        "ccedge demo: the shared core on virtual time ({:.0} s simulated, {} steps)",
        s.virtual_seconds, s.steps
    );
    let _ = writeln!(
        o,
        "CRM: publishes announcement outage-phl v1 for +{} (priority 10, offers a callback)",
        DIALLED[0]
    );
    let _ = writeln!(
        o,
        "Gateway: 20 calls from t = 2 s, one every 1.5 s; the node rings 1 s before answering"
    );
    let _ = writeln!(
        o,
        "Broker: down from t = {OUTAGE_FROM_S} s to t = {OUTAGE_TO_S} s\n"
    );
    let _ = writeln!(o, " #  caller          what happened");
    let mut booked = 0;
    let mut positions = Vec::new();
    for (idx, log) in &out.logs {
        let mut notes: Vec<String> = Vec::new();
        for n in &log.notes {
            // Keyed callback numbers are personal data: mask the middle like caller numbers.
            let n = match n.strip_prefix("keyed ") {
                Some(k) if k.len() > 9 => {
                    let tail = k.get(k.len() - 5..).unwrap_or("");
                    format!(
                        "keyed {}{}{tail}",
                        k.get(..4).unwrap_or(""),
                        "•".repeat(k.len() - 9)
                    )
                }
                _ => n.clone(),
            };
            if notes.last() != Some(&n) && !n.is_empty() {
                notes.push(n);
            }
        }
        let mut line = notes.join(", ");
        if !log.answered {
            if !line.is_empty() {
                line.push_str(", ");
            }
            let _ = write!(line, "not answered ({})", log.final_status.unwrap_or(0));
        } else {
            let _ = write!(line, " -> {} hung up", log.ended_by);
        }
        if let Some(p) = log.booked_position {
            booked += 1;
            positions.push(p);
        }
        if line.chars().count() > 118 {
            line = line.chars().take(115).collect();
            line.push_str("...");
        }
        let _ = writeln!(o, "{:>2}  {:<14}  {line}", idx + 1, masked(&log.caller));
    }
    if out.logs.len() != 20 {
        problems.push(format!("{} calls finished, expected 20", out.logs.len()));
    }
    let cancelled = out
        .logs
        .values()
        .filter(|l| l.final_status == Some(487))
        .count();
    if cancelled != 1 {
        problems.push(format!(
            "{cancelled} calls cancelled while ringing, expected 1"
        ));
    }
    if booked < 5 {
        problems.push(format!("only {booked} callbacks booked"));
    }
    if !out
        .logs
        .values()
        .any(|l| l.notes.iter().any(|n| n.contains("announcement")))
    {
        problems.push("nobody heard the announcement".into());
    }
    // Events at the CRM: seq 1..=max with no gap and nothing skipped.
    let seqs: Vec<u64> = out.received.iter().map(|e| e.seq).collect();
    let max = seqs.last().copied().unwrap_or(0);
    let contiguous = seqs.iter().copied().eq(1..=max);
    let mut by_type: alloc::collections::BTreeMap<&str, u64> = alloc::collections::BTreeMap::new();
    for e in &out.received {
        *by_type.entry(e.kind.type_str()).or_default() += 1;
    }
    let origin = crate::sim::ctx::WALL_ORIGIN_MS;
    let during = out
        .received
        .iter()
        .filter(|e| {
            let t = e.at.0 - origin;
            t >= (OUTAGE_FROM_S * 1000) as i64 && t < (OUTAGE_TO_S * 1000) as i64
        })
        .count();
    let _ = writeln!(
        o,
        "\nEvents: the CRM holds seq 1..={max}: {}, {} skipped",
        if contiguous { "no gaps" } else { "GAPS" },
        out.skipped.len()
    );
    let types: Vec<String> = by_type.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(o, "  {}", types.join(", "));
    let _ = writeln!(
        o,
        "  {during} events happened while the broker was down: held in the outbox, delivered after t = {OUTAGE_TO_S} s"
    );
    if !contiguous || !out.skipped.is_empty() {
        problems.push("the CRM's events have gaps".into());
    }
    if during == 0 {
        problems.push("no event waited for the broker".into());
    }
    let offered = by_type.get("call.offered").copied().unwrap_or(0);
    let ended = by_type.get("call.ended").copied().unwrap_or(0);
    if offered != 20 || ended != 20 {
        problems.push(format!(
            "{offered} call.offered and {ended} call.ended, expected 20 each"
        ));
    }
    let cb_events = out
        .received
        .iter()
        .filter(|e| matches!(e.kind, EventKind::CallbackRequested { .. }))
        .count();
    positions.sort_unstable();
    let _ = writeln!(
        o,
        "Callbacks: {booked} booked (positions {positions:?}), {} callback.requested events, {} requests at the CRM",
        cb_events, s.callbacks_at_crm
    );
    if cb_events != booked || s.callbacks_at_crm < booked {
        problems.push("booked callbacks and CRM records disagree".into());
    }
    let _ = writeln!(
        o,
        "Invariants: {} checks, all held (trace {})",
        s.stats.invariant_checks, s.trace_hash
    );
    (o, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_runs_as_expected_and_fits_on_a_screen() {
        let out = run_scenario(scenario()).expect("scenario runs");
        let (text, problems) = report(&out);
        assert!(problems.is_empty(), "{problems:?}\n{text}");
        assert!(text.lines().count() < 60, "{text}");
    }
}
