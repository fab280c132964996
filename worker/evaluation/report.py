"""Human-readable summaries of the evaluation reports (the JSON holds everything)."""

from __future__ import annotations


def _pct(d: dict | None) -> str:
    if not d or d.get("rate") is None:
        return "n/a"
    return f"{100 * d['rate']:.1f}% ({d['hits']}/{d['n']})"


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _targets(report: dict) -> list[str]:
    out = ["targets:"]
    for key, t in report.get("targets", {}).items():
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        out.append(f"  {mark:4}  {key}: {t['value']} (target {t['target']})")
    return out


def synth_lines(r: dict) -> list[str]:
    cfg = r["config"]
    lines = [(f"eval-synth: scorer {r['scorer']}, {cfg['n_clips']} clips x {cfg['seconds']:g} s, seeds "
              f"{cfg['seed0']}.., true offsets uniform in +/-{cfg['max_offset_ms']:g} ms")]
    for cond, c in r["conditions"].items():
        extra = f", 8-frame blocks {_pct(c['blocks_8'])}" if "blocks_8" in c else ""
        lines.append(f"  {cond:12} within +/-1 frame: 1-s windows {_pct(c['windows_1s'])}, 16-frame blocks "
                     f"{_pct(c['blocks_16'])}{extra}, whole clips {_pct(c['clips'])}; confident-and-wrong "
                     f"windows {_f(c['windows_1s'].get('confident_and_wrong_share'))}")
    sa = r["sync_auc"]
    lines.append(f"  in sync vs out of sync AUC (1-s windows): {_f(sa['windows_1s']['auc'])} "
                 f"({sa['windows_1s']['n_in_sync']} vs {sa['windows_1s']['n_out_of_sync']}); whole clips "
                 f"{_f(sa['clips']['auc'])}; by |offset| alone {_f(sa['windows_1s_by_abs_offset_alone']['auc'])}")
    m = r["mismatched"]
    lines.append(f"  matched vs mismatched window-score AUC: {_f(m['auc_window_score_matched_vs_mismatched'])}; "
                 f"mismatched clips with confidence >= 0.5: {m['mismatched_clips_confident']}/{len(m['summaries'])}")
    cal = r["calibration"]
    lines.append(f"  ECE: score {_f((cal['score_ece'] or {}).get('ece'))}, confidence "
                 f"{_f((cal['confidence_ece'] or {}).get('ece'))}")
    s = r["silence"]
    lines.append(f"  silence: {s['truly_silent_jobs']} truly silent jobs, {s['violations']} not SILENCE/null")
    sp = r["speed"]
    lines.append(f"  scoring {_f(sp['scoring_s_per_video_s'], 4)} s per s of video; run {sp['run_s']} s")
    return lines + _targets(r)


def real_lines(r: dict) -> list[str]:
    lines = [(f"eval-real: scorer {r['scorer']}, {r['n_real']} real + {r['n_generated']} generated clips, "
              f"shifts {r['config']['shifts_ms']} ms, degradations on {r['config']['degrade_on']}")]
    for name, agg in r["aggregates"].items():
        lines.append(f"  [{name}] whole clips {_pct(agg['clips'])}, 1-s windows {_pct(agg['windows_1s'])}, "
                     f"16-frame blocks {_pct(agg['blocks_16'])}; confident-and-wrong windows "
                     f"{_f(agg['windows_1s'].get('confident_and_wrong_share'))}")
    m = r["mismatched"]
    lines.append(f"  mismatched: window-score AUC matched vs mismatched {_f(m['auc_window_score'])} "
                 f"(all shifts as matched: {_f(m['auc_window_score_all_shifts'])}); mismatched clips: score "
                 f"median {_f(m['clip_score'].get('median'))}, confidence median "
                 f"{_f(m['clip_confidence'].get('median'))}, confident {m['clips_confident']}/{m['n_pairs']}")
    for deg, d in r.get("degraded", {}).items():
        lines.append(f"  {deg:5} whole clips {_pct(d['clips'])}, 1-s windows {_pct(d['windows_1s'])}, mean "
                     f"confidence {_f(d['windows_1s'].get('mean_confidence'))}, confident-and-wrong "
                     f"{_f(d['windows_1s'].get('confident_and_wrong_share'))}, face present "
                     f"{_f(d.get('face_present_share'))}")
    for g in r.get("generated", []):
        lines.append(f"  generated {g['clip']}: offset {g['offset_ms']} ms, score {_f(g['score'])}, confidence "
                     f"{_f(g['confidence'])}, {g['direction']}, {g['label']}")
    sp = r.get("speed", {})
    lines.append(f"  speed: scoring {_f(sp.get('scoring_s_per_video_s'), 4)} s/s; tracking "
                 f"{_f(sp.get('tracking_s_per_video_s_cached'), 4)} s/s (cache)"
                 + (f"; 720p fresh: tracking {_f(sp['fresh_720p']['tracking_s_per_video_s'], 3)} s/s, decode+track "
                    f"{_f(sp['fresh_720p']['decode_and_tracking_s_per_video_s'], 3)} s/s, scoring "
                    f"{_f(sp['fresh_720p']['scoring_s_per_video_s'], 4)} s/s" if sp.get("fresh_720p") else ""))
    return lines + _targets(r)
