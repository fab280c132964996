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
              f"{cfg['seed0']}.., true offsets uniform in +/-{cfg['max_offset_ms']:g} ms, search {_search(r)}")]
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


def _confident(w: dict) -> str:
    """The confident-and-wrong share with what it is a share of: a small share can still be every
    confident window."""
    wrong = w.get("wrong_if_confident")
    extra = "" if w.get("confident") is None else (
        f" ({w['confident']} confident" + ("" if wrong is None else f", {100 * wrong:.0f}% of them wrong") + ")")
    return f"{_f(w.get('confident_and_wrong_share'))}{extra}"


def _distinct_sets(r: dict) -> list[tuple[str, dict]]:
    """The aggregates, without a set that counts exactly what an earlier one did (with folds
    every real clip is held out: all_real is heldout_real again)."""
    out: list[tuple[str, dict]] = []
    for name, agg in r["aggregates"].items():
        if not any(agg == seen for _, seen in out):
            out.append((name, agg))
    return out


def _by_shift(agg: dict) -> str:
    return ", ".join(f"{int(s):+d} {_pct_short(d['clips'])} / {_pct_short(d['windows_1s'])}"
                     for s, d in agg.get("by_shift_ms", {}).items())


def _pct_short(d: dict | None) -> str:
    return "n/a" if not d or d.get("rate") is None else f"{100 * d['rate']:.1f}%"


def _mismatched_lines(section: dict, label: str) -> list[str]:
    lines = []
    for pool, m in section.items():
        lines.append(f"  mismatched [{pool}]{label}: window-score AUC matched vs mismatched {_f(m['auc_window_score'])} "
                     f"(all shifts as matched {_f(m['auc_window_score_all_shifts'])}); mismatched clips: score "
                     f"median {_f(m['clip_score'].get('median'))} (matched {_f(m['matched_clip_score'].get('median'))}), "
                     f"confidence median {_f(m['clip_confidence'].get('median'))}, confident "
                     f"{m['clips_confident']}/{m['n_pairs']}, naming a direction {m['clips_with_direction']}/"
                     f"{m['n_pairs']} (windows {_f(m.get('windows_with_direction_share'))}; matched windows "
                     f"{_f(m.get('matched_windows_with_direction_share'))})")
    return lines


def _routed(r: dict, agg: dict) -> str:
    """'n/N' windows of ``agg`` scored by a model other than the report's scorers (a routed
    scorer's narrowband model), or '' when every window was theirs."""
    main = {r.get("scorer"), *(f.get("scorer") for f in r.get("cv_folds", []))}
    by = agg.get("windows_by_scorer") or {}
    other = sum(n for name, n in by.items() if name not in main)
    return f"{other}/{sum(by.values())}" if other else ""


def real_lines(r: dict) -> list[str]:
    lines = [(f"eval-real: scorer {r['scorer']}, {r['n_real']} real + {r['n_generated']} generated clips, "
              f"shifts {r['config']['shifts_ms']} ms, search {_search(r)}, degradations on "
              f"{r['config']['degrade_on']}"),
             (f"  trained on by this bundle: {len(r['trained_on'])} real clips ({r['trained_on_source']}); "
              f"flagged: {', '.join(r['flagged']) or 'none'}")]
    for f in r.get("cv_folds", []):
        lines.append(f"  cross-validation fold {f['scorer']} ({(f['weights_sha256'] or '')[:8]}) judges "
                     f"{len(f['judges'])} real clips whose speakers it never trained on")
    for name, agg in _distinct_sets(r):
        lines.append(f"  [{name}, {r['sets'][name]} clips] whole clips {_pct(agg['clips'])}, 1-s windows "
                     f"{_pct(agg['windows_1s'])}, 16-frame blocks {_pct(agg['blocks_16'])}; confident-and-wrong "
                     f"windows {_confident(agg['windows_1s'])}"
                     + (f"; narrowband model {_routed(r, agg)} windows" if _routed(r, agg) else ""))
        if agg.get("by_shift_ms"):
            lines.append(f"    by shift (whole clips / windows): {_by_shift(agg)}")
    ctrl = r.get("mismatched_default_search")
    if ctrl:  # under the product's search first (the target), the evaluation's beside it
        lines += _mismatched_lines(ctrl, "") + _mismatched_lines(r["mismatched"], " (evaluation's search)")
    else:
        lines += _mismatched_lines(r["mismatched"], "")
    key = "heldout_real_without_flagged"
    for kind, d in r.get("degraded", {}).items():
        a, c = d[key], d["clean_same_pairs"][key]
        lines.append(f"  {kind:5} [{key}] whole clips {_pct(a['clips'])} (clean {_pct(c['clips'])}), 1-s windows "
                     f"{_pct(a['windows_1s'])} (clean {_pct(c['windows_1s'])}), mean confidence "
                     f"{_f(a['windows_1s'].get('mean_confidence'))} (clean {_f(c['windows_1s'].get('mean_confidence'))}), "
                     f"confident-and-wrong {_confident(a['windows_1s'])} (clean "
                     f"{_confident(c['windows_1s'])}), face present "
                     f"{_f(d.get('face_present_share'))}"
                     + (f", narrowband model {_routed(r, a)} windows" if _routed(r, a) else ""))
    cc = r.get("cross_check")
    if cc:
        lines.append(f"  cross-check (own audio >= 2 frames off by model and classical baseline): "
                     f"{', '.join(x['clip'] for x in cc['clips']) or 'none'} {CROSS_CHECK_CAVEAT}")
    for g in r.get("generated", []):
        lines.append(f"  generated {g['clip']}: offset {g['offset_ms']} ms, score {_f(g['score'])}, confidence "
                     f"{_f(g['confidence'])}, {g['direction']}, {g['label']}; shifted copies within 1 frame "
                     f"{_pct(g['shifted_copies_within_1_frame'])}")
    sp = r.get("speed", {})
    lines.append(f"  speed: scoring {_f(sp.get('scoring_s_per_video_s'), 4)} s/s (CPU "
                 f"{_f(sp.get('scoring_cpu_s_per_video_s'), 4)}); tracking "
                 f"{_f(sp.get('tracking_s_per_video_s_cached'), 4)} s/s (cache)")
    f = sp.get("fresh_720p")
    if f:
        lines.append(f"  speed, {f['clip']} {f['frame_size'][1]}x{f['frame_size'][0]} fresh: tracking "
                     f"{_f(f['tracking_s_per_video_s'], 3)} s/s, decode+tracking "
                     f"{_f(f['decode_and_tracking_s_per_video_s'], 3)} s/s, scoring {_f(f['scoring_s_per_video_s'], 4)} "
                     f"s/s; all {_f(f['tracking_plus_scoring_s_per_video_s'], 3)} s/s (load {f['loadavg_1min_before']})")
    return lines + _targets(r)


# The cross-check lists clips the model reads >= 2 frames off at 0 ms, i.e. clips it misses: an
# accuracy "without them" is chosen by the misses themselves (a review; the classical baseline
# alone puts 16 of the 48 clips >= 2 frames off, some the model reads right at every shift), so
# none is printed. The JSON keeps it (cross_check.heldout_without_them) for comparisons.
CROSS_CHECK_CAVEAT = ("(a lead on clips whose own audio may be off, not evidence: the model's half of the "
                      "rule is its own miss, and the baseline alone is noisy)")


def _search_max_ms(r: dict) -> float | None:
    """The report's offset search, +/- this many ms (the bundle's search_ms)."""
    return ((r.get("bundle") or {}).get("search_ms") or (None, None))[1]


def _edge_note(r: dict) -> str:
    hi = _search_max_ms(r)
    largest = max((abs(x) for x in r["config"]["shifts_ms"]), default=0)
    if hi is not None and hi > largest:
        return "past the largest shift: an estimate held at the search's edge is not counted right"
    return "no further than the largest shift: an estimate held at the search's edge counts as right there"


def _search(r: dict) -> str:
    hi = _search_max_ms(r)
    return "n/a" if hi is None else f"+/-{hi:g} ms"


# --- README tables ------------------------------------------------------------------------------
def _md_pct(d: dict | None) -> str:
    if not d or d.get("rate") is None:
        return "n/a"
    return f"{100 * d['rate']:.1f}% ({d['hits']}/{d['n']})"


def synth_markdown(r: dict) -> list[str]:
    cfg, c = r["config"], r["conditions"]
    out = [(f"Synthetic (`sync-scorer eval-synth`, scorer `{r['scorer']}`): {cfg['n_clips']} fresh clips x "
           f"{cfg['seconds']:g} s (seeds {cfg['seed0']}+, 25/30 fps), true offsets uniform in "
           f"+/-{cfg['max_offset_ms']:g} ms, offsets searched within {_search(r)}; within +/-1 frame of the true "
           f"offset:"), "",
           "| condition | 1-s windows | 16-frame blocks | 8-frame blocks | whole clips |", "|---|---|---|---|---|"]
    for cond, v in c.items():
        out.append(f"| {cond} | {_md_pct(v['windows_1s'])} | {_md_pct(v['blocks_16'])} | "
                   f"{_md_pct(v.get('blocks_8')) if 'blocks_8' in v else '-'} | {_md_pct(v['clips'])} |")
    sa, m, cal, s = r["sync_auc"], r["mismatched"], r["calibration"], r["silence"]
    out += ["", (f"- in sync (|offset| <= 1 frame) vs out of sync (>= 120 ms), AUC over 1-s windows: "
                f"{_f(sa['windows_1s']['auc'])} ({sa['windows_1s']['n_in_sync']} vs {sa['windows_1s']['n_out_of_sync']}; "
                f"statistic: {sa['statistic']})"),
            (f"- matched vs mismatched (another clip's audio) 1-s window score AUC: "
            f"{_f(m['auc_window_score_matched_vs_mismatched'])}; mismatched clips with confidence >= 0.5: "
            f"{m['mismatched_clips_confident']}/{len(m['summaries'])}"),
            (f"- calibration: score ECE {_f((cal['score_ece'] or {}).get('ece'))} (matched vs mismatched windows), "
            f"confidence ECE {_f((cal['confidence_ece'] or {}).get('ece'))} (P(window offset within +/-1 frame))"),
            (f"- silence: {s['truly_silent_jobs']} truly silent windows/blocks, {s['violations']} not labelled "
            f"SILENCE with a null score")]
    return out


def real_markdown(r: dict) -> list[str]:
    folds = r.get("cv_folds") or []
    if folds:
        judged = "; ".join(f"`{f['scorer']}` ({(f['weights_sha256'] or '')[:8]}) judges {len(f['judges'])}"
                           for f in folds)
        held = (f"Cross-validated: every real clip is judged by a fold bundle that never trained on its speaker "
                f"({judged}; {len(r['trained_on'])} judged by a bundle that trained on them)")
    else:
        held = f"Held out = not trained on by this bundle ({len(r['trained_on'])} dev clips were)"
    out = [(f"Real footage (`sync-scorer eval-real`, scorer `{r['scorer']}`): dev clips, own audio = 0 ms, "
           f"shifts {', '.join(f'{s:+d}' for s in r['config']['shifts_ms'])} ms, offsets searched within "
           f"{_search(r)} ({_edge_note(r)}), judged against the absolute applied shift (within +/-1 frame). {held}; flagged = "
           f"{', '.join(r['flagged']) or 'none'} (README notes an offset in their own audio)."), "",
           "| clips | whole clips | 1-s windows | 16-frame blocks | confident & wrong windows |",
           "|---|---|---|---|---|"]
    for name, a in _distinct_sets(r):
        out.append(f"| {name} ({r['sets'][name]}) | {_md_pct(a['clips'])} | {_md_pct(a['windows_1s'])} | "
                   f"{_md_pct(a['blocks_16'])} | {_confident(a['windows_1s'])} |")
    first_name, first = _distinct_sets(r)[0]
    if first.get("by_shift_ms"):
        out += ["", f"- {first_name} by applied shift (whole clips / 1-s windows): {_by_shift(first)}"]
    ctrl = r.get("mismatched_default_search")
    m = (ctrl or r["mismatched"])["heldout_real"]
    wide = "" if not ctrl else (f" (under the evaluation's {_search(r)} search: AUC "
                                f"{_f(r['mismatched']['heldout_real']['auc_window_score'])}: a window's score reads its best "
                                f"similarity against the rest of the search)")
    out += ["", (f"- mismatched control (video + another speaker's audio, held out{', under the default +/-200 ms search' if ctrl else ''}): "
                 f"1-s window score AUC matched vs mismatched {_f(m['auc_window_score'])}{wide}; mismatched clip "
                 f"summaries: score median {_f(m['clip_score'].get('median'))} (matched "
                 f"{_f(m['matched_clip_score'].get('median'))}), confidence median "
                 f"{_f(m['clip_confidence'].get('median'))}, {m['clips_confident']}/{m['n_pairs']} with confidence >= 0.5")]
    if r.get("degraded"):
        key = "heldout_real_without_flagged"
        method = next(iter(r["degraded"].values()))["method"]
        out += ["", f"Degraded ({method}; {key}; clean = the same pairs):", "",
                "| version | whole clips | 1-s windows | mean confidence | confident & wrong windows |",
                "|---|---|---|---|---|"]
        first = next(iter(r["degraded"].values()))["clean_same_pairs"][key]
        out.append(f"| clean | {_md_pct(first['clips'])} | {_md_pct(first['windows_1s'])} | "
                   f"{_f(first['windows_1s'].get('mean_confidence'))} | {_confident(first['windows_1s'])} |")
        for kind, d in r["degraded"].items():
            a = d[key]
            # a row degraded another way than the header says (phone: the audio) says how
            name = kind if d["method"] == method else f"{kind} ({d['method']})"
            out.append(f"| {name} | {_md_pct(a['clips'])} | {_md_pct(a['windows_1s'])} | "
                       f"{_f(a['windows_1s'].get('mean_confidence'))} | {_confident(a['windows_1s'])} |")
        routed = [f"{_routed(r, d[key])} {kind} windows (clean, the same pairs: "
                  f"{_routed(r, d['clean_same_pairs'][key]) or 'none'})"
                  for kind, d in r["degraded"].items() if _routed(r, d[key])]
        if routed:
            out += ["", "The bundle's narrowband model (telephone-band audio) read " + "; ".join(routed) + "."]
    cc = r.get("cross_check")
    if cc:
        listed = ", ".join(f"{x['clip']} (model {x['model_own_offset_ms']:+.0f} ms, classical "
                           f"{x['classical_own_offset_frames']:+d} frames, r {x['classical_r']:.2f})"
                           for x in cc["clips"]) or "none"
        out += ["", (f"- cross-check of the clips' own audio (classical baseline, leave-one-speaker-out; "
                     f"{cc['rule']}): {listed} {CROSS_CHECK_CAVEAT}")]
    out.append("")
    for g in r.get("generated", []):
        out.append(f"- generated `{g['clip']}`: offset {g['offset_ms']} ms, score {_f(g['score'])}, confidence "
                   f"{_f(g['confidence'])}, {g['direction']}, {g['label']}")
    sp = r.get("speed", {})
    f = sp.get("fresh_720p") or {}
    out.append(f"- speed (seconds of processing per second of video): scoring {_f(sp.get('scoring_s_per_video_s'), 3)}; "
               f"tracking {_f(sp.get('tracking_s_per_video_s_cached'), 3)} (all clips, when cached)"
               + (f"; {f['clip']} ({f['frame_size'][1]}x{f['frame_size'][0]}) fresh: decode+tracking "
                  f"{_f(f['decode_and_tracking_s_per_video_s'], 3)} (tracking alone {_f(f['tracking_s_per_video_s'], 3)}), "
                  f"scoring {_f(f['scoring_s_per_video_s'], 3)}, together {_f(f['tracking_plus_scoring_s_per_video_s'], 3)}"
                  if f else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.evaluation.report REPORT.json [...]``: README-ready markdown."""
    import json
    import sys

    from worker.cli import CliError, _Parser  # the command line's one-line argument errors

    ap = _Parser(prog="python -m worker.evaluation.report",
                 description="README-ready markdown tables from eval-synth / eval-real reports")
    ap.add_argument("reports", nargs="+", metavar="REPORT.json", help="a --json --out file of eval-synth or eval-real")
    try:
        args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    for path in args.reports:
        try:
            with open(path, encoding="utf-8") as fh:
                r = json.load(fh)
            lines = synth_markdown(r) if r.get("command") == "sync-scorer eval-synth" else real_markdown(r)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            print(f"error: {path}: not a readable eval-synth/eval-real report ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return 3
        print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
