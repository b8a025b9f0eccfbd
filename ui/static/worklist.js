// Live state of the runs on the worklist (polls the JSON API every 3 s).
"use strict";

async function refreshRuns(table) {
  const answer = await fetch(table.dataset.live + "?limit=100", {credentials: "same-origin"});
  if (!answer.ok) return;
  for (const run of await answer.json()) {
    const row = table.querySelector(`tr[data-run-id="${run.run_id}"]`);
    if (!row) continue;
    row.className = "state-" + run.state.toLowerCase();
    row.querySelector(".state").textContent = run.state + (run.superseded_by ? " (superseded)" : "")
      + (run.state === "RUNNING" && run.stage ? ` · ${run.stage.replaceAll("_", " ")} for ${Math.max(0, Date.now() / 1000 - run.stage_started_at).toFixed(0)} s` : "");
    const reason = row.querySelector(".reason");
    if (run.reason || !run.needs_review || !run.needs_review.length) {
      reason.textContent = run.reason || "";
    } else {
      const badge = document.createElement("span");
      badge.className = "needs-review";
      badge.textContent = "needs review: " + run.needs_review.join("; ");
      reason.replaceChildren(badge);
    }
    if (run.finished_at && run.started_at) {
      row.querySelector(".took").textContent = (run.finished_at - run.started_at).toFixed(1) + " s";
    }
  }
}

const runsTable = document.getElementById("runs");
if (runsTable) setInterval(() => refreshRuns(runsTable).catch(() => {}), 3000);
