// The admin's run page, live: follows the run's event stream (the admin's copy of
// GET /api/v1/runs/<id>/events/stream) and appends each new event to <tbody id="run-events">, whose
// data-stream-url names the stream and whose rows carry data-event-id; updates #run-spent from the
// events' spent_usd and #run-status from the stream's end (labels from the json_script
// #run-status-labels; the event types to listen to from #run-event-types). The stream ends once the run waits for a person; the server closes it after a
// while otherwise, and EventSource reconnects with Last-Event-ID.
"use strict";

(function () {
  // Dollars to the cent, rounded half to even, as the admin's format_usd: "$1,234.50". From the
  // decimal string the API sends, never through a float.
  function formatUsd(text) {
    const match = /^(-?)(\d+)(?:\.(\d{1,6}))?$/.exec(String(text));
    if (!match) {
      return String(text);
    }
    const micros = BigInt(match[2] + (match[3] || "").padEnd(6, "0"));
    let cents = micros / 10000n;
    const rest = micros % 10000n;
    if (rest > 5000n || (rest === 5000n && cents % 2n === 1n)) {
      cents += 1n;
    }
    const dollars = (cents / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const sign = match[1] === "-" && cents !== 0n ? "-" : "";
    return `${sign}$${dollars}.${(cents % 100n).toString().padStart(2, "0")}`;
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function eventRow(item) {
    const row = document.createElement("tr");
    row.dataset.eventId = String(item.id);
    row.className = `event-${item.type}`;
    const payload = cell(JSON.stringify(item.payload));
    payload.className = "payload";  // as the page's own rows
    row.append(cell(item.created_at), cell(item.type), cell(item.actor), payload);
    return row;
  }

  function follow() {
    const events = document.getElementById("run-events");
    if (!events || !events.dataset.streamUrl || !window.EventSource) {
      return;
    }
    const status = document.getElementById("run-status");
    const spent = document.getElementById("run-spent");
    const labels = readJson("run-status-labels", {});
    const shown = Array.from(events.querySelectorAll("tr[data-event-id]"), (row) => Number(row.dataset.eventId));
    const after = shown.length ? Math.max(...shown) : 0;
    const source = new EventSource(`${events.dataset.streamUrl}?after=${after}`);

    source.addEventListener("end", (message) => {
      source.close();
      const ended = JSON.parse(message.data).status;
      if (status) {
        status.textContent = labels[ended] || ended;
      }
      events.dataset.streamEnded = ended;
    });
    // EventSource dispatches each event by its type (the stream's `event:` field): one listener per
    // type the service records, from the json_script #run-event-types.
    const onRunEvent = (message) => {
      const item = JSON.parse(message.data);
      if (events.querySelector(`tr[data-event-id="${item.id}"]`)) {
        return;
      }
      events.append(eventRow(item));
      if (spent && item.payload && item.payload.spent_usd != null) {
        spent.textContent = formatUsd(item.payload.spent_usd);
      }
      // Until the stream's end says where the run stopped, a run that records events is running.
      if (status && labels.running) {
        status.textContent = labels.running;
      }
    };
    for (const type of readJson("run-event-types", [])) {
      source.addEventListener(type, onRunEvent);
    }
  }

  function readJson(id, otherwise) {
    const script = document.getElementById(id);
    return script ? JSON.parse(script.textContent) : otherwise;
  }

  document.addEventListener("DOMContentLoaded", follow);
})();
