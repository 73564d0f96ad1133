// ComfyUI-GAG frontend extension:
// - the Attention Geometry Probe node shows its latest plot, updated after every sampling step
//   (server message "comfyui_gag.geometry");
// - nodes with a "layers" input get a "choose blocks" button listing the valid blocks of the
//   model they last patched (server message "comfyui_gag.layout") and of the released families.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION = "ComfyUI-GAG";
const NODES_WITH_LAYERS = new Set([
  "GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance", "AttentionCirculationControlAdvanced",
]);
const connectedBlocks = new Map();
let knownFamilies = null;

const PLOT_DATA_URL = /^data:image\/png;base64,[A-Za-z0-9+/=]+$/;

function showPlotInNode(detail) {
  // Only an inline PNG: a server message never makes the page fetch a URL.
  if (typeof detail.image !== "string" || !PLOT_DATA_URL.test(detail.image)) return;
  // Node ids are numbers in graphs built in the UI, strings in prompts loaded from API JSON.
  const node = app.graph?.getNodeById(detail.node) ?? app.graph?.getNodeById(Number(detail.node));
  if (!node) return;
  const image = new Image();
  image.onload = () => {
    node.imgs = [image];
    node.imageIndex = 0;
    app.graph.setDirtyCanvas(true, true);
  };
  image.src = detail.image;
}

async function familyBlocks() {
  if (knownFamilies === null) {
    const response = await api.fetchApi("/comfyui_gag/blocks");
    knownFamilies = response.ok ? (await response.json()).families : {};
  }
  return knownFamilies;
}

// Menu entries for a block list "input 1-2, 4-5, output 3-11": the whole list, then each group.
function entriesFor(label, blocks) {
  const groups = [];
  for (const part of blocks.split(",").map((p) => p.trim())) {
    const named = part.match(/^([a-z]+)\s+(.*)$/);
    if (named) groups.push([named[1], named[2]]);
    else if (groups.length) groups[groups.length - 1][1] += `, ${part}`;
  }
  const entries = [{ content: `${label}: all (${blocks})`, value: blocks }];
  for (const [group, ranges] of groups) {
    entries.push({ content: `${label}: ${group} ${ranges}`, value: `${group} ${ranges}` });
  }
  return entries;
}

export async function blockMenuEntries(node) {
  const entries = [];
  const connected = connectedBlocks.get(String(node.id));
  if (connected) entries.push(...entriesFor("connected model", connected));
  for (const [family, blocks] of Object.entries(await familyBlocks())) {
    entries.push(...entriesFor(family, blocks));
  }
  entries.push({ content: "default for the model (empty)", value: "" });
  return entries;
}

// Block lists come from the server. Older frontends' context menus render entries as HTML, newer ones
// as text: entries go in escaped, then each shows its text as it is.
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function showBlockMenu(node, event) {
  const widget = node.widgets?.find((w) => w.name === "layers");
  if (!widget) return;
  const entries = await blockMenuEntries(node);
  const shown = entries.map((e) => escapeHtml(e.content));
  const menu = new LiteGraph.ContextMenu(shown, {
    event,
    title: "Blocks to patch",
    callback: (chosen) => {
      const entry = entries[shown.indexOf(chosen)];
      if (!entry) return;
      widget.value = entry.value;
      widget.callback?.(widget.value);
      app.graph.setDirtyCanvas(true, true);
    },
  });
  menu.root?.querySelectorAll(".litemenu-entry").forEach((element, index) => {
    if (index < entries.length) element.textContent = entries[index].content;
  });
}

app.registerExtension({
  name: EXTENSION,
  setup() {
    api.addEventListener("comfyui_gag.geometry", (event) => showPlotInNode(event.detail));
    api.addEventListener("comfyui_gag.layout", (event) => {
      connectedBlocks.set(String(event.detail.node), event.detail.blocks);
    });
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES_WITH_LAYERS.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      // serialize: false keeps the button out of saved workflows and queued prompts.
      this.addWidget("button", "choose blocks", null, (_value, _canvas, node, _pos, event) =>
        showBlockMenu(node ?? this, event), { serialize: false });
      this.gagBlockMenuEntries = () => blockMenuEntries(this);
      this.gagShowBlockMenu = (event) => showBlockMenu(this, event);
      return result;
    };
  },
});
