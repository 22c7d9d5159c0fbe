"""The simulation report: ``report.html`` with charts (matplotlib PNGs) and ``results.json``.

Charts: blast radius per scenario and mode; time-to-detect and time-to-contain
distributions per mode; per-hop latency (plain TCP vs TLS vs zero-trust hop). Tables:
every scenario's measurements, and the seed's two tables (how each model handles the
main threats; time to detect, time to remediate, latency per hop) with our measured
values beside the seed's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

# The seed's claims, quoted as figures to compare against.
SEED_THREATS = [
    ("insider", "Insider threats",
     "Trusted once inside the perimeter: broad access, little monitoring",
     "Every request verified; least privilege; behavioural analytics"),
    ("compromised_algo", "Compromised algorithmic agents",
     "Can reach any internal system the network allows",
     "Confined to its grants; anomalies detected and contained"),
    ("lateral_movement", "Lateral movement",
     "Largely unrestricted inside the wall",
     "Micro-segmentation blocks it; every hop authenticated"),
    ("supply_chain", "Supply-chain attacks",
     "Trusted once deployed",
     "Attestation of code and continuous verification"),
    ("credential_theft", "Credential theft and replay", "Stolen credentials work from anywhere inside",
     "Short-lived, certificate-bound credentials"),
    ("rogue_deployment", "Rogue deployment", "Any build that is deployed runs",
     "Only promoted code digests get an identity"),
]
SEED_METRICS = {
    "ttd": ("Time to detect lateral movement", "hours to months", "seconds to minutes"),
    "ttr": ("Time to remediate / contain", "days to weeks", "minutes to hours"),
    "hop": ("Latency per hop", "0.1-1 us", "5-20 us"),
}

_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("trustfabric.simulation", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "not detected"
    if value >= 3_600_000:
        return f"{value / 3_600_000:.1f} h"
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    return f"{value:.1f} ms"


def _fmt_ttc(summary: dict[str, Any], key: str, label: str) -> str:
    value = summary.get(key)
    if value is None:
        return f"nothing contained during the run (0 of {summary.get('scenarios', 0)} scenarios)"
    return f"{_fmt_ms(value)} ({label}, {summary.get('contained', 0)} of {summary.get('scenarios', 0)} contained)"


def _save(fig: Any, out: Path, name: str) -> str:
    """Lay out, write ``out/name`` (PNG) and close one chart; returns ``name`` for the report to link."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _charts(results: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}
    rows = results["scenarios"]
    names = sorted({r["name"] for r in rows}, key=lambda n: [r["name"] for r in rows].index(n))
    by = {(r["name"], r["mode"]): r for r in rows}
    colors = {"perimeter": "#c0504d", "zero-trust": "#2e7d32"}

    # Blast radius per scenario and mode.
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.38
    for i, mode in enumerate(("perimeter", "zero-trust")):
        values = [by.get((n, mode), {}).get("blast_radius", 0) for n in names]
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ax.bar(xs, values, width, label=mode, color=colors[mode])
        for x, v in zip(xs, values):
            ax.text(x, v, str(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("blast radius (resources / actions / records reached)")
    ax.set_title("Blast radius per scenario")
    ax.legend()
    charts["blast_radius"] = _save(fig, out, "blast_radius.png")

    # Time to detect / contain distributions (log scale).
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, title in ((axes[0], "ttd_ms", "Time to detect"), (axes[1], "ttc_ms", "Time to contain")):
        data, labels, missing = [], [], []
        for mode in ("perimeter", "zero-trust"):
            ran = [r for r in rows if r["mode"] == mode]
            values = [r[key] for r in ran if r.get(key) is not None]
            if values:
                data.append(values)
                how = " modelled" if key == "ttd_ms" and mode == "perimeter" else ""
                labels.append(f"{mode}{how}\n(n={len(values)})")
            elif ran:
                missing.append(f"{mode}: {'none contained' if key == 'ttc_ms' else 'none detected'}")
        if data:
            ax.boxplot(data, tick_labels=labels, showfliers=True)
            for k, values in enumerate(data, start=1):
                ax.scatter([k] * len(values), values, s=12, alpha=0.6, color="#1f4e79", zorder=3)
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "nothing detected", ha="center", va="center", transform=ax.transAxes)
        if missing:  # say so, rather than leave a mode silently out of the chart
            ax.text(0.02, 0.97, "; ".join(missing), ha="left", va="top", fontsize=8, color="#c0504d",
                    transform=ax.transAxes)
        ax.set_ylabel("milliseconds (log)")
        ax.set_title(title)
    charts["detect_contain"] = _save(fig, out, "detect_contain.png")

    hop = results.get("hop") or {}
    keys = [("plain TCP", "plain_rtt_us_p50", "plain_rtt_us_p99"), ("mTLS", "tls_rtt_us_p50", "tls_rtt_us_p99"),
            ("zero-trust hop", "zt_rtt_us_p50", "zt_rtt_us_p99")]
    if any(hop.get(k[1]) is not None for k in keys):
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        labels = [k[0] for k in keys]
        p50 = [hop.get(k[1]) or 0 for k in keys]
        p99 = [hop.get(k[2]) or 0 for k in keys]
        xs = range(len(labels))
        for offset, values, name, color in ((-0.2, p50, "p50", "#1f4e79"), (0.2, p99, "p99", "#8eb4e3")):
            bars_x = [x + offset for x in xs]
            ax.bar(bars_x, values, 0.4, label=name, color=color)
            for x, v in zip(bars_x, values):  # p99 dwarfs p50: the values are written on the bars
                ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), labels)
        ax.set_yscale("log")
        ax.set_ylabel("round trip, microseconds (log)")
        ax.set_title("Per-hop latency over loopback")
        ax.legend()
        charts["hop_latency"] = _save(fig, out, "hop_latency.png")
    return charts


def _seed_tables(results: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = results["scenarios"]
    threats = []
    for category, title, seed_perimeter, seed_zt in SEED_THREATS:
        measured = {}
        for mode in ("perimeter", "zero-trust"):
            sel = [r for r in rows if r.get("category") == category and r["mode"] == mode]
            if sel:
                measured[mode] = (
                    f"{sum(r['successes'] for r in sel)}/{sum(r['attempts'] for r in sel)} attempts succeeded, "
                    f"blast radius {sum(r['blast_radius'] for r in sel)}, "
                    f"detected {sum(1 for r in sel if r['detected'])}/{len(sel)}"
                )
        if measured:
            threats.append({"title": title, "seed_perimeter": seed_perimeter, "seed_zt": seed_zt,
                            "perimeter": measured.get("perimeter", "not run"),
                            "zt": measured.get("zero-trust", "not run")})
    summary = results.get("summary", {})
    per, zt = summary.get("perimeter", {}), summary.get("zero-trust", {})
    hop = results.get("hop") or {}
    metrics = [
        {"title": SEED_METRICS["ttd"][0], "seed_perimeter": SEED_METRICS["ttd"][1], "seed_zt": SEED_METRICS["ttd"][2],
         "perimeter": (_fmt_ms(per.get("ttd_ms_p50")) + " (p50, modelled: the next periodic log review)"
                       if per else "not run"),
         "zt": _fmt_ms(zt.get("ttd_ms_p99")) + " (p99 over every scenario, measured)" if zt else "not run"},
        {"title": SEED_METRICS["ttr"][0], "seed_perimeter": SEED_METRICS["ttr"][1], "seed_zt": SEED_METRICS["ttr"][2],
         "perimeter": _fmt_ttc(per, "ttc_ms_p50", "p50") if per else "not run",
         "zt": _fmt_ttc(zt, "ttc_ms_p99", "p99") if zt else "not run"},
        {"title": SEED_METRICS["hop"][0], "seed_perimeter": SEED_METRICS["hop"][1], "seed_zt": SEED_METRICS["hop"][2],
         "perimeter": f"{hop['plain_rtt_us_p50']:.1f} us round trip (p50, plain TCP)" if hop.get("plain_rtt_us_p50") else "not measured",
         "zt": (f"+{hop['zt_added_us_p50']:.1f} us added (p50), +{hop.get('zt_added_us_p99', 0):.1f} us (p99)"
                if hop.get("zt_added_us_p50") is not None else "not measured")},
    ]
    return threats, metrics


def write_report(results: dict[str, Any], out_dir: Path, *, title: str = "trustfabric threat simulation",
                 notes: list[str] | None = None) -> Path:
    """Write ``report.html``, the chart PNGs and ``results.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    charts = _charts(results, out_dir)
    threats, metrics = _seed_tables(results)
    html = _TEMPLATE.get_template("report.html.j2").render(
        title=title,
        results=results,
        charts=charts,
        threats=threats,
        metrics=metrics,
        notes=notes or [],
        fmt_ms=_fmt_ms,
    )
    path = out_dir / "report.html"
    path.write_text(html)
    return path
