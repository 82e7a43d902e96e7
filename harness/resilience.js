// The Resilience tab's analysis panel (served by harness/webui.py as ./resilience/tab.js).
//
// Locust's own table on the tab shows the live figures, but Locust stops refreshing it once a
// test has stopped: exactly when the analysis runs. So on the Resilience tab this script polls
// ./resilience/data itself and shows, under that table, the analysis: its state, the final
// verdicts and a link to the run's report.html. Plain DOM beside Locust's React tree, never in it.
(() => {
  "use strict";
  const TAB = "resilience";
  const PANEL = "resilience-analysis";
  const COLORS = { pass: "#2e7d32", fail: "#d32f2f", inconclusive: "#ed6c02", skipped: "#757575" };
  let shown = "";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "style") Object.assign(node.style, value);
      else node.setAttribute(name, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function cell(text, style) {
    return el("td", { style: { padding: "4px 10px", borderBottom: "1px solid #8884", ...style } }, String(text ?? ""));
  }

  function verdictTable(verdicts) {
    const head = ["verdict", "status", "figure", "threshold", "n", "why"].map((h) =>
      el("th", { style: { textAlign: "left", padding: "4px 10px" } }, h),
    );
    const rows = verdicts.map((v) =>
      el(
        "tr",
        { "data-verdict": v.name, "data-status": v.status },
        cell(v.name),
        cell(String(v.status).toUpperCase(), { color: COLORS[v.status] || "inherit", fontWeight: "bold" }),
        cell(v.figure === null ? "-" : `${+Number(v.figure).toPrecision(4)} ${v.unit || ""}`),
        cell(v.threshold === null ? "-" : v.threshold),
        cell(v.n),
        cell(v.summary),
      ),
    );
    return el(
      "table",
      { id: "resilience-verdicts", style: { borderCollapse: "collapse", margin: "8px 0" } },
      el("thead", {}, el("tr", {}, ...head)),
      el("tbody", {}, ...rows),
    );
  }

  function render(panel, analysis) {
    panel.dataset.status = analysis.state;
    const report = analysis.report
      ? el(
          "p",
          {},
          el("a", { id: "resilience-report", href: "./resilience/report", target: "_blank", rel: "noopener" },
            "Open report.html"),
          " (the run directory's capacity report)",
        )
      : null;
    const verdicts = analysis.verdicts && analysis.verdicts.length ? verdictTable(analysis.verdicts) : null;
    const output = analysis.output
      ? el("details", {}, el("summary", {}, "What the analysis printed"),
          el("pre", { style: { fontSize: "12px", overflowX: "auto" } }, analysis.output))
      : null;
    const parts = [
      el("h3", { style: { margin: "0 0 8px" } }, "Analysis: ", el("span", { id: "resilience-analysis-state" },
        analysis.state)),
      el("p", { style: { margin: "0 0 8px" } }, analysis.message || ""),
      analysis.state === "done"
        ? el("p", { style: { margin: "0 0 8px", opacity: 0.7 } },
            "Locust's table above stopped refreshing with the test: reload the page to see the final verdicts in it.")
        : null,
      report,
      verdicts,
      output,
    ];
    panel.replaceChildren(...parts.filter((part) => part !== null));
  }

  async function refresh() {
    let panel = document.getElementById(PANEL);
    if (new URLSearchParams(window.location.search).get("tab") !== TAB) {
      if (panel) panel.remove();
      shown = "";
      return;
    }
    const table = document.querySelector(".MuiTableContainer-root");
    if (!table) return; // the tab's table is not rendered yet
    if (!panel) {
      panel = el("section", { id: PANEL, style: { marginTop: "16px", padding: "12px 16px", border: "1px solid #8886",
        borderRadius: "4px" } });
      shown = "";
    }
    if (table.nextElementSibling !== panel) table.after(panel);
    let data;
    try {
      const response = await fetch("./resilience/data", { cache: "no-store" });
      if (!response.ok) return;
      data = await response.json();
    } catch (e) {
      return; // Locust is gone or restarting: keep what is shown
    }
    const text = JSON.stringify(data.analysis);
    if (text !== shown) {
      render(panel, data.analysis);
      shown = text;
    }
  }

  window.setInterval(refresh, 2000);
  document.addEventListener("click", () => window.setTimeout(refresh, 150));
  refresh();
})();
