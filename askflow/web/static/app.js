// askflow web page: ask, follow the answer, rate it, ask follow-ups in the same thread. No build step.
(() => {
  "use strict";
  const api = (path) => `${document.baseURI.replace(/\/$/, "")}/${path.replace(/^\//, "")}`;
  const $ = (id) => document.getElementById(id);
  // This browser's asker token: it continues its own threads and rates its own answers, and nobody else's.
  const askerToken = localStorage.getItem("askflow-asker-token") || crypto.randomUUID().replace(/-/g, "");
  localStorage.setItem("askflow-asker-token", askerToken);
  let threadId = null;
  let shown = []; // the requests of this thread on the page, oldest first
  const POLL_MS = 250; // the worker writes the answer so far at most every 250 ms
  const ESCALATION_POLL_MS = 5000; // how often an open escalation is looked at again for the team's answer
  const FEED_EXCERPT_CHARS = 280;
  const RATINGS = "askflow-ratings"; // localStorage: request id -> true (helpful) or false, the latest 200
  const THREAD = "askflow-thread"; // sessionStorage: this tab's thread, shown again after a reload

  async function call(method, path, body) {
    const response = await fetch(api(path), {
      method,
      headers: { "X-Asker-Token": askerToken, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    let payload = {};
    try { payload = await response.json(); } catch (_) { /* not JSON: keep the status */ }
    if (!response.ok) throw new Error(payload.error || `The server answered ${response.status}.`);
    return payload;
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  // A small, safe Markdown: paragraphs, "> " quotes, "- " lists, `code`, **bold**, and "[2]" as a link to source 2.
  // Every piece becomes a DOM node with text content: nothing in an answer is ever parsed as HTML.
  function renderAnswer(container, text, sources) {
    const byNumber = new Map(sources.map((s) => [s.n, s]));
    container.replaceChildren();
    for (const block of text.split(/\n\s*\n/)) {
      const lines = block.split("\n").filter((line) => line.trim());
      if (!lines.length) continue;
      if (lines.every((line) => /^\s*>/.test(line))) {
        const quote = document.createElement("blockquote");
        const para = document.createElement("p");
        renderInline(para, lines.map((line) => line.replace(/^\s*>\s?/, "")).join(" "), byNumber);
        quote.append(para);
        container.append(quote);
      } else if (lines.every((line) => /^\s*[-*] /.test(line))) {
        const list = document.createElement("ul");
        for (const line of lines) {
          const item = document.createElement("li");
          renderInline(item, line.replace(/^\s*[-*] /, ""), byNumber);
          list.append(item);
        }
        container.append(list);
      } else {
        const para = document.createElement("p");
        renderInline(para, lines.join(" "), byNumber);
        container.append(para);
      }
    }
  }

  // A stored answer's own page (not its raw JSON).
  const answerPage = (requestId) => api(`answers/${encodeURIComponent(requestId)}`);

  // Only web, file (local docs) and relative links: a source's URL comes from ingested content, so "javascript:"
  // or "data:" never becomes a link. A stored answer linked to its raw record on this API (".../requests/{id}", as
  // stored answers were linked before their pages existed) opens its page.
  function safeUrl(url) {
    try {
      const parsed = new URL(url, document.baseURI);
      if (!["https:", "http:", "file:"].includes(parsed.protocol)) return "#";
      const stored = parsed.origin === location.origin && parsed.pathname.match(/\/requests\/([A-Za-z0-9_-]+)$/);
      return stored ? answerPage(stored[1]) : parsed.href;
    } catch (_) {
      return "#";
    }
  }

  // An answer cut for the feed to at most `limit` characters, never inside a citation "[n]", code or bold: at the
  // end of its last sentence when that keeps at least half of it, else after its last word (with "…"). A short
  // answer, or one with no such place, is shown whole.
  function excerpt(text, limit) {
    if (text.length <= limit) return { text, cut: false };
    const kept = [...text.matchAll(/```[\s\S]*?```|`[^`\n]*`|\*\*[^*]+\*\*|\[\d+\]/g)]
      .map((match) => [match.index, match.index + match[0].length]);
    let sentence = 0;
    let word = 0;
    for (let at = 1; at <= limit; at++) {
      if (!/\s/.test(text[at]) || /\s/.test(text[at - 1])) continue; // not the end of a word
      if (kept.some(([start, end]) => start < at && at < end)) continue;
      word = at;
      if (/[.!?][)"'*]*(\s*\[\d+\])*$/.test(text.slice(0, at))) sentence = at;
    }
    if (sentence >= limit / 2) return { text: text.slice(0, sentence), cut: true };
    if (word) return { text: `${text.slice(0, word)}…`, cut: true };
    return { text, cut: false };
  }

  // The ratings this browser gave: an answer shown again (after a reload) shows which button was chosen.
  function ratings() {
    try { return JSON.parse(localStorage.getItem(RATINGS) || "{}"); } catch (_) { return {}; }
  }

  function rememberRating(requestId, positive) {
    const given = ratings();
    delete given[requestId]; // the latest last
    given[requestId] = positive;
    localStorage.setItem(RATINGS, JSON.stringify(Object.fromEntries(Object.entries(given).slice(-200))));
  }

  function showRating(node, positive) {
    for (const button of node.querySelectorAll(".rate")) {
      button.setAttribute("aria-pressed", String(positive !== undefined && (button.dataset.positive === "true") === positive));
    }
  }

  function saveThread() {
    if (shown.length) sessionStorage.setItem(THREAD, JSON.stringify({ threadId, requests: shown }));
    else sessionStorage.removeItem(THREAD);
  }

  function renderInline(parent, text, byNumber) {
    let last = 0;
    for (const match of text.matchAll(/\[(\d+)\]|``?([^`]+)``?|\*\*([^*]+)\*\*/g)) {
      parent.append(text.slice(last, match.index));
      if (match[1] !== undefined) {
        const source = byNumber.get(Number(match[1]));
        if (source) {
          const link = document.createElement("a");
          link.href = safeUrl(source.url);
          link.textContent = match[0];
          link.title = source.title;
          parent.append(link);
        } else {
          parent.append(match[0]);
        }
      } else {
        const node = document.createElement(match[2] !== undefined ? "code" : "strong");
        node.textContent = match[2] !== undefined ? match[2] : match[3];
        parent.append(node);
      }
      last = match.index + match[0].length;
    }
    parent.append(text.slice(last));
  }

  // The answer and its sources, while it is written (complete: false) and once it is done. A source the model was
  // given but has not cited (yet) is marked only once the answer is complete.
  function showAnswer(node, text, sources, complete) {
    renderAnswer(node.querySelector(".answer-text"), text, sources);
    node.classList.toggle("writing", !complete);
    node.querySelector(".rating").hidden = !complete;
    const list = node.querySelector(".sources");
    list.replaceChildren();
    for (const source of sources) {
      const item = document.createElement("li");
      item.value = source.n;
      const link = document.createElement("a");
      link.href = safeUrl(source.url);
      link.textContent = source.section ? `${source.title} — ${source.section}` : source.title;
      item.append(link);
      if (complete && source.cited === false) {
        item.classList.add("uncited");
        item.append(" (given to the model, not cited)");
      }
      list.append(item);
    }
  }

  function renderRecord(record) {
    const node = $("answer-template").content.firstElementChild.cloneNode(true);
    node.dataset.requestId = record.request_id;
    node.querySelector(".question").textContent = record.question;
    if (record.mode === "extractive") {
      const note = node.querySelector(".mode-note");
      note.textContent = "Extractive mode: no language model is configured, so these are passages quoted from the sources.";
      note.hidden = false;
    }
    if (record.mode === "cached") {
      const note = node.querySelector(".cache-note");
      const how = record.cache_similarity >= 1 ? "the same question" : `a question ${Math.round(record.cache_similarity * 100)}% alike`;
      note.querySelector(".cache-text").textContent = `A verified answer to ${how}, asked before.`;
      note.querySelector(".cache-link").href = answerPage(record.cached_from);
      note.querySelector(".fresh").addEventListener("click", () => submit(record.question, { fresh: true }));
      note.hidden = false;
    }
    showAnswer(node, record.answer || "", record.sources || [], true);
    showEscalation(node, record);
    node.querySelector(".ask-person").addEventListener("click", () => askPerson(node, record.request_id));
    for (const button of node.querySelectorAll(".rate")) {
      button.addEventListener("click", () => rate(node, record.request_id, button.dataset.positive === "true"));
    }
    showRating(node, ratings()[record.request_id]);
    return node;
  }

  // Said first when askflow is not sure: what follows is what it found, and a person was (or can be) asked; the
  // team's answer, once it came, above askflow's attempt.
  function showEscalation(node, record) {
    const escalation = record.escalation;
    const asked = escalation && (escalation.state === "open" || escalation.state === "joined");
    const note = node.querySelector(".unsure-note");
    if (record.not_sure || asked) {
      note.textContent = "I'm not sure the docs cover this" +
        (asked ? " — I've asked the team; their answer will appear here." : ".") + " What I found is below.";
      note.hidden = false;
    }
    const team = escalation && escalation.answer;
    const section = node.querySelector(".team-answer");
    if (team) {
      renderAnswer(section.querySelector(".team-text"), team.text, []);
      section.querySelector(".team-by").textContent = `By ${team.by}, ${new Date(team.at).toLocaleString()}.`;
      section.hidden = false;
      note.textContent = "The team answered this question.";
    }
    node.querySelector(".person").hidden = Boolean(escalation);
    if (asked && !team) followEscalation(node, record.request_id);
  }

  async function askPerson(node, requestId) {
    const status = node.querySelector(".person-status");
    try {
      const result = await call("POST", `requests/${requestId}/escalate`, {});
      status.textContent = result.escalation === "skipped" ? `Could not ask the team: ${result.why_not}.`
        : "I've asked the team; their answer will appear here.";
      if (result.escalation !== "skipped") followEscalation(node, requestId);
    } catch (error) {
      status.textContent = `Could not ask the team: ${error.message}`;
    }
  }

  // Until the team answers (while the page is open), look again now and then.
  async function followEscalation(node, requestId) {
    if (node.dataset.following) return;
    node.dataset.following = "true";
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, ESCALATION_POLL_MS));
      if (!node.isConnected) return; // its answer left the page (a new thread)
      try {
        const record = await call("GET", `requests/${requestId}`);
        if (record.escalation && record.escalation.answer) { showEscalation(node, record); return; }
      } catch (_) { /* try again later */ }
    }
  }

  async function rate(node, requestId, positive) {
    const status = node.querySelector(".rating-status");
    const comment = node.querySelector(".comment").value.trim();
    try {
      await call("POST", `requests/${requestId}/feedback`, { positive, ...(comment ? { comment } : {}) });
      rememberRating(requestId, positive);
      showRating(node, positive);
      status.textContent = positive ? "Thanks — glad it helped." : "Thanks — we will use this to improve.";
    } catch (error) {
      status.textContent = `Could not save the rating: ${error.message}`;
    }
  }

  // Follow the request until it ends, showing the answer as the model writes it (onPartial).
  async function waitForAnswer(requestId, onPartial) {
    const started = Date.now();
    while (Date.now() - started < 15 * 60 * 1000) {
      const record = await call("GET", `requests/${requestId}`);
      if (record.status === "complete" || record.status === "failed") return record;
      if (record.partial_answer) {
        onPartial(record);
        $("status").textContent = "Writing the answer…";
      } else {
        $("status").textContent = record.status === "answering" ? "Working on the answer…" : "Queued…";
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    throw new Error("The answer is taking too long; please try again.");
  }

  async function ask(event) {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) { showError("Please type a question."); $("question").focus(); return; }
    await submit(question, {});
  }

  // fresh: answer anew even when a verified earlier answer matches
  async function submit(question, { fresh = false }) {
    showError("");
    $("ask-button").disabled = true;
    $("status").textContent = "Sending…";
    try {
      const body = { question, ...(threadId ? { thread_id: threadId } : {}), ...(fresh ? { fresh: true } : {}) };
      const queued = await call("POST", "requests", body);
      threadId = threadId || queued.request_id;
      let writing = null; // the answer being written, shown until the complete one replaces it
      let record;
      try {
        record = await waitForAnswer(queued.request_id, (partial) => {
          if (!writing) writing = $("thread").appendChild(renderRecord({ ...partial, answer: "", sources: [] }));
          showAnswer(writing, partial.partial_answer, partial.sources || [], false);
        });
      } finally {
        writing?.remove();
      }
      if (record.status === "failed") throw new Error(`Sorry, this question could not be answered (${record.error}).`);
      $("thread").append(renderRecord(record));
      shown.push(record.request_id);
      saveThread();
      $("status").textContent = "Answer ready. Ask a follow-up below.";
      $("question").value = "";
      showFollowUp();
    } catch (error) {
      $("status").textContent = "";
      showError(error.message);
    } finally {
      $("ask-button").disabled = false;
    }
  }

  function showFollowUp() {
    $("question-label").textContent = "Follow-up question";
    $("new-thread").hidden = false;
  }

  // After a reload, the tab's thread as it was (a request gone meanwhile is left out).
  async function restoreThread() {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(THREAD) || "null"); } catch (_) { /* unreadable: none */ }
    if (!saved || !Array.isArray(saved.requests)) return;
    for (const requestId of saved.requests) {
      try {
        const record = await call("GET", `requests/${encodeURIComponent(requestId)}`);
        if (record.status !== "complete") continue;
        $("thread").append(renderRecord(record));
        shown.push(requestId);
      } catch (_) { /* gone: left out */ }
    }
    if (shown.length) {
      threadId = saved.threadId || shown[0];
      showFollowUp();
    }
    saveThread();
  }

  // Each good answer as answers are rendered (Markdown, citations linked to its sources), cut at a sentence or a
  // word, and linked to its own page.
  async function loadRecent() {
    try {
      const feed = await call("GET", "requests?good=true");
      const list = $("recent");
      list.replaceChildren();
      for (const item of feed.items) {
        const entry = document.createElement("li");
        const link = Object.assign(document.createElement("a"), { href: answerPage(item.request_id), className: "recent-question" });
        link.append(Object.assign(document.createElement("strong"), { textContent: item.question }));
        const answer = Object.assign(document.createElement("div"), { className: "answer-text" });
        const part = excerpt(item.answer || "", FEED_EXCERPT_CHARS);
        renderAnswer(answer, part.text, item.sources || []);
        entry.append(link, answer);
        if (part.cut) {
          entry.append(Object.assign(document.createElement("a"), {
            href: answerPage(item.request_id), className: "more", textContent: "Read the whole answer" }));
        }
        list.append(entry);
      }
      if (!feed.items.length) list.append(Object.assign(document.createElement("li"), { textContent: "No rated answers yet." }));
    } catch (error) {
      $("recent").textContent = `Could not load recent answers: ${error.message}`;
    }
  }

  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask-form").requestSubmit();
  });
  $("new-thread").addEventListener("click", () => {
    threadId = null;
    shown = [];
    saveThread();
    $("thread").replaceChildren();
    $("question-label").textContent = "Your question";
    $("new-thread").hidden = true;
    $("question").focus();
  });
  restoreThread();
  loadRecent();
})();
