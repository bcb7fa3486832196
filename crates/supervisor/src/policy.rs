//! Restart policy, pure: given an exit and the service's failure history at time `now`,
//! decide restart-after-delay, done, or given up. Clock and randomness are passed in.
//!
//! A service that ran for `backoff.reset_after` before it exited is not crash-looping: it
//! starts again at once (a killed validator is back in its next round, not seconds
//! later), and the exit does not count toward the give-up limit (a node killed now and
//! then by an operator, the OOM killer or a chaos experiment must never be given up on).
//! Only exits after shorter runs — a crash loop — back off, growing with each one in a
//! row, and count toward giving up.

use chainctl_core::instance::Exit;
use chainctl_core::plan::RestartSpec;
use chainctl_core::profile::RestartPolicy;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start again after this delay.
    Restart(Duration),
    /// A clean exit the policy does not restart: the service is done.
    Done,
    /// Stop trying; `chainctl restart SERVICE` clears it.
    GiveUp(String),
}

/// A service's recent failures, for backoff and the give-up window.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Failures in a row (reset after a long enough healthy run).
    pub streak: u32,
    /// When recent failures happened (pruned to the give-up window).
    pub failures: VecDeque<Instant>,
}

impl History {
    /// Forgets everything (after `chainctl restart`).
    pub fn clear(&mut self) {
        *self = History::default();
    }
}

/// The delay before restart number `streak` (0-based), before jitter: initial × factor^streak,
/// capped at max.
pub fn base_delay(spec: &RestartSpec, streak: u32) -> Duration {
    let b = &spec.backoff;
    let secs = b.initial.get().as_secs_f64() * b.factor.powi(streak.min(64) as i32);
    Duration::from_secs_f64(secs.min(b.max.get().as_secs_f64()))
}

/// Applies ±jitter: `unit` is a uniform random number in [0, 1).
pub fn jittered(d: Duration, jitter: f64, unit: f64) -> Duration {
    d.mul_f64(1.0 + jitter * (2.0 * unit - 1.0))
}

/// Decides what follows an exit after `uptime` of running.
pub fn on_exit(
    spec: &RestartSpec,
    hist: &mut History,
    exit: Exit,
    uptime: Duration,
    now: Instant,
    unit: f64,
) -> Decision {
    let ran_long = uptime >= spec.backoff.reset_after.get();
    if ran_long {
        hist.streak = 0;
    }
    let code = match exit {
        Exit::Code(c) => Some(i64::from(c)),
        _ => None,
    };
    let success = code.is_some_and(|c| spec.success_exit_codes.contains(&c));
    if let Some(c) = code.filter(|c| spec.prevent_exit_codes.contains(c)) {
        return Decision::GiveUp(format!("exit code {c} is in restart.prevent_exit_codes: fix the cause, then run `chainctl restart`"));
    }
    match (spec.policy, success) {
        (RestartPolicy::Never, _) | (RestartPolicy::OnFailure, true) => return Decision::Done,
        (RestartPolicy::Always, true) => {
            return Decision::Restart(jittered(
                spec.backoff.initial.get(),
                spec.backoff.jitter,
                unit,
            ));
        }
        _ => {}
    }
    if ran_long {
        // Not a crash loop: no delay, not counted toward giving up, and the streak stays
        // at 0 so that a crash right after this start waits `initial`.
        return Decision::Restart(Duration::ZERO);
    }
    let window = spec.give_up.window.get();
    hist.failures.push_back(now);
    while hist
        .failures
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        hist.failures.pop_front();
    }
    if hist.failures.len() >= spec.give_up.failures as usize {
        return Decision::GiveUp(format!(
            "{} failures within {}: see `chainctl logs`, fix the cause, then run `chainctl restart`",
            hist.failures.len(),
            humantime::format_duration(window)
        ));
    }
    let delay = jittered(base_delay(spec, hist.streak), spec.backoff.jitter, unit);
    hist.streak += 1;
    Decision::Restart(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainctl_core::profile::{BackoffConfig, GiveUpConfig};

    fn spec(policy: RestartPolicy) -> RestartSpec {
        RestartSpec {
            policy,
            success_exit_codes: vec![0],
            prevent_exit_codes: vec![78],
            backoff: BackoffConfig::default(),
            give_up: GiveUpConfig {
                failures: 10,
                window: chainctl_core::profile::Dur::secs(1800),
            },
        }
    }

    #[test]
    fn delays_grow_by_factor_within_jitter_and_cap_at_max() {
        let s = spec(RestartPolicy::OnFailure);
        let mut h = History::default();
        let t0 = Instant::now();
        let mut prev = Duration::ZERO;
        for i in 0..9u32 {
            let unit = (i as f64 * 0.37) % 1.0;
            let Decision::Restart(d) = on_exit(
                &s,
                &mut h,
                Exit::Code(1),
                Duration::from_secs(1),
                t0 + Duration::from_secs(i as u64 * 400),
                unit,
            ) else {
                panic!("expected a restart")
            };
            let base = Duration::from_secs_f64((2f64.powi(i as i32)).min(300.0));
            assert!(
                d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25),
                "attempt {i}: {d:?} vs {base:?}"
            );
            if base < Duration::from_secs(300) {
                assert!(d > prev, "delays grow: {d:?} after {prev:?}");
            }
            prev = d;
        }
    }

    #[test]
    fn gives_up_after_the_limit_within_the_window_only() {
        let mut s = spec(RestartPolicy::Always);
        s.give_up.failures = 3;
        s.give_up.window = chainctl_core::profile::Dur::secs(60);
        let mut h = History::default();
        let t0 = Instant::now();
        let up = Duration::from_millis(10);
        assert!(matches!(
            on_exit(&s, &mut h, Exit::Code(1), up, t0, 0.5),
            Decision::Restart(_)
        ));
        // The next failure is outside the window of the first, so still a restart.
        assert!(matches!(
            on_exit(
                &s,
                &mut h,
                Exit::Code(1),
                up,
                t0 + Duration::from_secs(61),
                0.5
            ),
            Decision::Restart(_)
        ));
        assert!(matches!(
            on_exit(
                &s,
                &mut h,
                Exit::Signal(9),
                up,
                t0 + Duration::from_secs(62),
                0.5
            ),
            Decision::Restart(_)
        ));
        let d = on_exit(
            &s,
            &mut h,
            Exit::Code(2),
            up,
            t0 + Duration::from_secs(63),
            0.5,
        );
        assert!(
            matches!(&d, Decision::GiveUp(m) if m.starts_with("3 failures within 1m")),
            "{d:?}"
        );
    }

    #[test]
    fn exit_status_lists_decide() {
        let mut h = History::default();
        let now = Instant::now();
        let up = Duration::from_secs(1);
        assert_eq!(
            on_exit(
                &spec(RestartPolicy::OnFailure),
                &mut h,
                Exit::Code(0),
                up,
                now,
                0.5
            ),
            Decision::Done
        );
        assert!(
            matches!(on_exit(&spec(RestartPolicy::OnFailure), &mut h, Exit::Code(78), up, now, 0.5), Decision::GiveUp(m) if m.contains("prevent_exit_codes"))
        );
        assert_eq!(
            on_exit(
                &spec(RestartPolicy::Never),
                &mut h,
                Exit::Code(3),
                up,
                now,
                0.5
            ),
            Decision::Done
        );
        assert!(matches!(
            on_exit(
                &spec(RestartPolicy::Always),
                &mut h,
                Exit::Code(0),
                up,
                now,
                0.5
            ),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn long_uptime_resets_the_streak() {
        let s = spec(RestartPolicy::OnFailure);
        let mut h = History::default();
        let now = Instant::now();
        for _ in 0..5 {
            on_exit(&s, &mut h, Exit::Code(1), Duration::from_secs(1), now, 0.5);
        }
        assert_eq!(h.streak, 5);
        let d = on_exit(
            &s,
            &mut h,
            Exit::Code(1),
            Duration::from_secs(601),
            now,
            0.5,
        );
        assert_eq!(d, Decision::Restart(Duration::ZERO));
        assert_eq!(h.streak, 0);
    }

    #[test]
    fn an_exit_after_a_long_run_restarts_at_once_and_a_crash_loop_still_backs_off() {
        let s = spec(RestartPolicy::OnFailure);
        let long = s.backoff.reset_after.get();
        let short = Duration::from_millis(300);
        let mut h = History::default();
        let t0 = Instant::now();
        let at = |k: u64| t0 + Duration::from_secs(k);
        // Killed after a healthy run, three times in a row: each back at once.
        for k in 0..3 {
            assert_eq!(
                on_exit(&s, &mut h, Exit::Signal(9), long, at(k), 0.5),
                Decision::Restart(Duration::ZERO)
            );
        }
        // Then it crashes right after starting: 1 s, 2 s, 4 s (jitter 0 at unit 0.5).
        for (k, want) in [(3, 1), (4, 2), (5, 4)] {
            assert_eq!(
                on_exit(&s, &mut h, Exit::Code(1), short, at(k), 0.5),
                Decision::Restart(Duration::from_secs(want))
            );
        }
        // Exits after long runs never add up to giving up; crash-loop exits do (10 within
        // 30 min: 3 so far).
        for k in 6..100 {
            assert_eq!(
                on_exit(&s, &mut h, Exit::Signal(9), long, at(k), 0.5),
                Decision::Restart(Duration::ZERO)
            );
        }
        for k in 100..106 {
            assert!(matches!(
                on_exit(&s, &mut h, Exit::Code(1), short, at(k), 0.5),
                Decision::Restart(_)
            ));
        }
        let d = on_exit(&s, &mut h, Exit::Code(1), short, at(106), 0.5);
        assert!(
            matches!(&d, Decision::GiveUp(m) if m.starts_with("10 failures")),
            "{d:?}"
        );
    }
}
