// The assistant: conversations whose answers offer options; a pressed option runs as an ordinary
// job and its result appears in the conversation. Uses the page's `api` and the account's events.

const $ = (selector) => document.querySelector(selector);
const FINISHED = new Set(["completed", "failed", "canceled"]);

export function createChat({ api, ApiError, mediaSlot, onJob, knownJob }) {
  const state = {
    chats: new Map(), // id -> chat
    listed: false,
    current: null, // id of the open chat
    messages: new Map(), // id -> <li> of the open chat
    pending: new Map(), // jobId -> <li> of a job started here whose result message has not arrived
    shownJobs: new Set(), // jobs whose result message is shown
  };
  const list = $("#messages");

  // ------------------------------------------------------------ the conversation list

  function renderChats() {
    const chats = [...state.chats.values()].sort((a, b) => activity(b) - activity(a));
    $("#chats").replaceChildren(
      ...chats.map((chat) => {
        const item = document.createElement("li");
        const link = Object.assign(document.createElement("a"), { href: `#/chat/${chat.id}` });
        link.append(
          Object.assign(document.createElement("span"), { className: "chat-name", textContent: chat.title || "New chat" }),
          Object.assign(document.createElement("span"), {
            className: "chat-when",
            textContent: `${chat.messageCount} message${chat.messageCount === 1 ? "" : "s"}`,
          }),
        );
        if (chat.id === state.current) link.setAttribute("aria-current", "page");
        item.append(link);
        return item;
      }),
    );
  }

  function activity(chat) {
    return Date.parse(chat.lastMessageAt || chat.createdAt);
  }

  async function loadChats() {
    try {
      const chats = await (await api("/chats?limit=100")).json();
      for (const chat of chats) state.chats.set(chat.id, chat);
      state.listed = true;
    } catch (error) {
      showError(`Your conversations could not be loaded: ${error.message}`);
    }
    renderChats();
  }

  // ------------------------------------------------------------ messages

  function renderMessage(message) {
    let item = state.messages.get(message.id);
    if (!item) {
      item = document.createElement("li");
      item.className = "message";
      item.dataset.testid = "message";
      item.dataset.role = message.role;
      state.messages.set(message.id, item);
      list.append(item);
    }
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    for (const chunk of message.renderChunks || [{ type: "text", text: message.text }]) {
      if (chunk.type === "text") {
        bubble.append(Object.assign(document.createElement("p"), { textContent: chunk.text }));
      } else if (chunk.type === "button") {
        const button = Object.assign(document.createElement("button"), {
          type: "button",
          className: "option",
          textContent: chunk.label,
        });
        button.dataset.testid = "option";
        button.dataset.optionId = chunk.optionId;
        button.addEventListener("click", () => generate(button, chunk));
        bubble.append(button);
      } else if (chunk.type === "media") {
        // An event's message may name the job without its outputs: take them from the job.
        const outputs = chunk.outputs?.length ? chunk.outputs : knownJob(chunk.jobId)?.outputs || [];
        const grid = mediaGrid(outputs, message.text);
        bubble.append(grid);
        if (!outputs.length) fillFromJob(grid, chunk.jobId, message.text);
        state.shownJobs.add(chunk.jobId);
        state.pending.get(chunk.jobId)?.remove();
        state.pending.delete(chunk.jobId);
      }
    }
    item.replaceChildren(bubble);
    $("#chat-intro").hidden = true;
  }

  function mediaGrid(outputs, label) {
    const grid = document.createElement("div");
    grid.className = "chat-media";
    grid.dataset.testid = "media";
    outputs.forEach((output, index) => {
      grid.append(mediaSlot(output, `${label} (${index + 1} of ${outputs.length})`));
    });
    return grid;
  }

  async function fillFromJob(grid, jobId, label) {
    try {
      const job = await (await api(`/generations/${jobId}`)).json();
      if (job.outputs?.length) grid.replaceWith(mediaGrid(job.outputs, label));
    } catch (error) {
      grid.replaceWith(Object.assign(document.createElement("p"), { textContent: `The result is unavailable: ${error.message}` }));
    }
  }

  function scrollToEnd() {
    list.lastElementChild?.scrollIntoView({ block: "end", behavior: "smooth" });
  }

  async function open(chatId) {
    if (!state.listed) await loadChats();
    state.current = chatId;
    state.messages.clear();
    state.pending.clear();
    list.replaceChildren();
    $("#chat-error").hidden = true;
    $("#chat-intro").hidden = Boolean(chatId);
    $("#delete-chat").hidden = !chatId;
    renderChats();
    if (!chatId) {
      $("#chat-title").textContent = "Ask the assistant";
      return;
    }
    try {
      const chat = await (await api(`/chats/${chatId}`)).json();
      state.chats.set(chat.id, chat);
      $("#chat-title").textContent = chat.title || "New chat";
      let next = `/chats/${chatId}/messages?limit=200`;
      while (next && state.current === chatId) {
        const response = await api(next);
        for (const message of await response.json()) renderMessage(message);
        const link = (response.headers.get("Link") || "").match(/<([^>]+)>\s*;\s*rel="?next"?/);
        next = link ? link[1] : null;
      }
      scrollToEnd();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        state.chats.delete(chatId);
        renderChats();
        showError("That conversation does not exist (any more).");
      } else {
        showError(`The conversation could not be loaded: ${error.message}`);
      }
    }
  }

  // ------------------------------------------------------------ sending and generating

  function showError(text) {
    const error = $("#chat-error");
    error.textContent = text;
    error.hidden = false;
  }

  async function send(event) {
    event.preventDefault();
    const textarea = $("#chat-text");
    const text = textarea.value.trim();
    $("#chat-error").hidden = true;
    if (!text) {
      showError("Write what you would like first.");
      return;
    }
    const button = $("#chat-send");
    button.disabled = true;
    try {
      let chatId = state.current;
      if (!chatId) {
        const chat = await (await api("/chats", { method: "POST", body: {} })).json();
        state.chats.set(chat.id, chat);
        chatId = chat.id;
        state.current = chatId;
        history.replaceState(null, "", `#/chat/${chatId}`);
        $("#delete-chat").hidden = false;
      }
      const pair = await (await api(`/chats/${chatId}/messages`, { method: "POST", body: { text } })).json();
      textarea.value = "";
      renderMessage(pair.userMessage);
      renderMessage(pair.assistantMessage);
      const chat = state.chats.get(chatId);
      if (chat) {
        chat.title = chat.title || text.slice(0, 200);
        chat.messageCount += 2;
        chat.lastMessageAt = pair.assistantMessage.createdAt;
        $("#chat-title").textContent = chat.title;
      }
      renderChats();
      scrollToEnd();
    } catch (error) {
      showError(error instanceof ApiError ? error.message : "The server could not be reached. Try again.");
    } finally {
      button.disabled = false;
    }
  }

  function newKey() {
    return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  }

  async function generate(button, chunk) {
    button.disabled = true;
    // One key per press, kept across a retry of the same press: a second job is never started by accident.
    const key = button.dataset.key || (button.dataset.key = newKey());
    try {
      const response = await api(`/options/${chunk.optionId}/generate`, {
        method: "POST",
        headers: { "Idempotency-Key": key },
      });
      const answered = await response.json();
      delete button.dataset.key;
      // The job's events may have overtaken this answer: show the newest of the two.
      const seen = knownJob(answered.jobId);
      const job = seen && Date.parse(seen.updatedAt) > Date.parse(answered.updatedAt) ? seen : answered;
      if (!state.shownJobs.has(job.jobId)) showJob(job, chunk.label);
      onJob(answered);
    } catch (error) {
      showError(`Could not start “${chunk.label}”: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // A job started from this conversation, shown until the assistant's result message replaces it.
  function showJob(job, label) {
    let item = state.pending.get(job.jobId);
    if (!item) {
      if (!label) return;
      item = document.createElement("li");
      item.className = "message pending";
      item.dataset.role = "assistant";
      item.dataset.testid = "message";
      item.dataset.label = label;
      state.pending.set(job.jobId, item);
      list.append(item);
      scrollToEnd();
    }
    item.dataset.status = job.status;
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    const words = {
      pending: `Starting ${item.dataset.label}…`,
      processing: `Making ${item.dataset.label}…`,
      completed: `Here is ${item.dataset.label}.`,
      failed: `${item.dataset.label} failed: ${job.error ? job.error.message : "no reason given"}.`,
      canceled: `${item.dataset.label} was canceled.`,
    }[job.status];
    bubble.append(Object.assign(document.createElement("p"), { textContent: words }));
    const outputs = job.outputs || [];
    if (outputs.length) bubble.append(mediaGrid(outputs, job.prompt || item.dataset.label));
    else if (!FINISHED.has(job.status)) bubble.append(Object.assign(document.createElement("div"), { className: "typing" }));
    item.replaceChildren(bubble);
  }

  // ------------------------------------------------------------ events

  function onEvent(event) {
    if (event.type.startsWith("job.")) {
      const job = event.data;
      if (job && state.pending.has(job.jobId)) showJob(job);
      return;
    }
    const chatId = event.chatId || event.data?.chatId;
    const chat = chatId && state.chats.get(chatId);
    if (event.type === "message.created" && event.data?.id) {
      if (chat) {
        chat.messageCount += state.messages.has(event.data.id) ? 0 : 1;
        chat.lastMessageAt = event.data.createdAt;
        renderChats();
      }
      if (chatId === state.current) {
        renderMessage(event.data);
        scrollToEnd();
      }
    }
  }

  async function deleteCurrent() {
    const chatId = state.current;
    if (!chatId) return;
    try {
      await api(`/chats/${chatId}`, { method: "DELETE" });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        showError(`Could not delete the conversation: ${error.message}`);
        return;
      }
    }
    state.chats.delete(chatId);
    location.hash = "#/chat";
  }

  $("#chat-form").addEventListener("submit", send);
  $("#chat-text").addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter starts a new line (as chat apps do).
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#chat-form").requestSubmit();
    }
  });
  $("#delete-chat").addEventListener("click", deleteCurrent);

  return { open, onEvent };
}
