// What a user sees, in a real browser: `dvc plots show`'s page and TensorBoard (run list and
// curves, custom scalars, HParams, PR curves, the confusion figure, the projector) of a project
// that ran `dvc repro`, rendered in headless Chromium (Debian's `chromium`) and saved as PNGs.
//
//     node docs/browser/screenshots.mjs PROJECT OUT_DIR     (or: make screenshots PROJECT=...)
//
// `dvc` and `tensorboard` come from PATH (the Makefile puts .venv/bin first). DVC's page is
// written with docs/browser/dvc_plots_offline.html, its vega scripts pointed at this folder's
// node_modules (`make vega`), so nothing is fetched from a CDN. Every PNG is a screenshot of one
// element or one dashboard; docs/browser/shrink.py then stores them as palette PNGs.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const [project, outDir] = process.argv.slice(2).map((p) => path.resolve(p));
if (!project || !outDir) {
  console.error("usage: node docs/browser/screenshots.mjs PROJECT OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PORT = Number(process.env.TB_PORT || 6123);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function dvcPlotsPage() {
  // The offline template with its relative script paths made absolute: the page is written
  // outside the repository here.
  const work = mkdtempSync(path.join(tmpdir(), "dvc-plots-"));
  const template = readFileSync(path.join(here, "dvc_plots_offline.html"), "utf8").replaceAll(
    "../docs/browser/node_modules/",
    pathToFileURL(path.join(here, "node_modules")).href + "/",
  );
  writeFileSync(path.join(work, "template.html"), template);
  const out = path.join(work, "dvc_plots");
  const shown = spawnSync("dvc", ["plots", "show", "--html-template", path.join(work, "template.html"), "-o", out], {
    cwd: project,
    encoding: "utf8",
  });
  if (shown.status !== 0) throw new Error(`dvc plots show failed:\n${shown.stdout}\n${shown.stderr}`);
  return pathToFileURL(path.join(out, "index.html")).href;
}

async function startTensorBoard() {
  const board = spawn("tensorboard", ["--logdir", "runs", "--port", String(PORT), "--bind_all"], {
    cwd: project,
    stdio: "ignore",
  });
  for (let i = 0; i < 120; i++) {
    try {
      const runs = await (await fetch(`http://localhost:${PORT}/data/runs`)).json();
      if (runs.length) return board;
    } catch {}
    await sleep(500);
  }
  board.kill();
  throw new Error("TensorBoard did not start");
}

async function shootElement(page, selector, name) {
  const element = await page.waitForSelector(selector, { timeout: 60000 });
  await element.screenshot({ path: path.join(outDir, `${name}.png`) });
  console.log(`${name}.png`);
}

async function shootPage(page, name) {
  await page.screenshot({ path: path.join(outDir, `${name}.png`) });
  console.log(`${name}.png`);
}

async function dvcPlots(browser) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1500, height: 1000 });
  await page.goto(dvcPlotsPage(), { waitUntil: "load" });
  // every vega chart drawn (vega-embed adds an svg or canvas to each)
  await page.waitForFunction(
    () => [...document.querySelectorAll(".vega-embed")].length > 0 &&
      [...document.querySelectorAll(".vega-embed")].every((e) => e.querySelector("svg, canvas")),
    { timeout: 60000 },
  );
  const ids = await page.$$eval("body > div[id]", (divs) => divs.map((d) => d.id));
  console.log(`dvc plots show: ${ids.length} charts: ${ids.join(", ")}`);
  const wanted = {
    plots_accuracy_vs_train_size_json: "dvc_accuracy_vs_train_size",
    plots_transfer_loss_json: "dvc_transfer_loss",
    plots_transfer_accuracy_json: "dvc_transfer_accuracy",
    plots_tinyvgg_loss_json: "dvc_tinyvgg_loss",
    plots_tinyvgg_accuracy_json: "dvc_tinyvgg_accuracy",
  };
  for (const [id, name] of Object.entries(wanted)) await shootElement(page, `[id="${id}"]`, name);
  const best = JSON.parse(readFileSync(path.join(project, "metrics/best.json"), "utf8")).name;
  // DVC's element ids: the plot's path with these characters replaced by "_" (dvc_render)
  const id = "plots/confusion/winner.json".replace(/[!@#$%^&*()[\]{};,<>?\\/:.|`~=_+ ]/g, "_");
  await shootElement(page, `[id="${id}"]`, "dvc_confusion_best");
  await page.close();
}

const escapeRegex = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

async function typeInto(page, label, text) {
  // a Polymer paper-input of TensorBoard's dashboards (in shadow roots), by its label
  const found = await page.evaluate(
    (label, text) => {
      const input = deepQuery(document, `paper-input[label^="${label}"]`);
      if (input) input.value = text;
      return Boolean(input);
    },
    label,
    text,
  );
  if (!found) throw new Error(`no input labelled ${label}`);
  await sleep(3000);
}

async function tensorBoard(browser) {
  const base = `http://localhost:${PORT}/?darkMode=false`;
  const best = JSON.parse(readFileSync(path.join(project, "metrics/best.json"), "utf8")).name;
  const page = await browser.newPage();
  await page.setViewport({ width: 1440, height: 900 });
  await page.evaluateOnNewDocument(PROJECTOR_HELPERS); // every frame, the projector's included
  const open = async (hash, settle) => {
    await page.goto(`${base}#${hash}`, { waitUntil: "networkidle0", timeout: 120000 });
    await sleep(settle);
  };
  await open("timeseries", 6000); // the run list: one entry per model
  await shootPage(page, "tensorboard_runs_and_scalars");
  await open("custom_scalars", 6000); // train and test in one chart, for TinyVGG and the best model
  // its run directory (Experiment.run_name): <size>_images/<model>/lr_..-wd_..-seed_../<n>_epochs
  const [, size, model, axes, epochs] = best.match(/^(\d+_images)-(.+?)-(lr_.+-wd_.+-seed_\d+)-(\d+_epochs)$/) ?? [];
  const bestRun = best === "tinyvgg" ? "tinyvgg" : `transfer/${size}/${model}/${axes}/${epochs}`;
  await typeInto(page, "Write a regex to filter runs", `^(tinyvgg|${escapeRegex(bestRun)})$`);
  await shootPage(page, "tensorboard_custom_scalars");
  await page.setViewport({ width: 1800, height: 800 }); // every column of the HParams table
  await open("hparams", 6000);
  await shootPage(page, "tensorboard_hparams");
  await page.setViewport({ width: 1440, height: 900 });
  await open("pr_curves", 6000); // the best model's per-class curves
  await typeInto(page, "Filter tags", `^${escapeRegex(best)}/`);
  await shootPage(page, "tensorboard_pr_curves");
  await page.setViewport({ width: 1440, height: 1480 }); // both figures, one above the other
  await open("images", 6000); // the confusion figures of TinyVGG and the best model, full size
  await typeInto(page, "Filter tags", `^confusion/(tinyvgg|${escapeRegex(best)})$`);
  await page.evaluate(() => {
    deepQuery(document, "tf-image-dashboard")._actualSize = true; // "Show actual image size"
  });
  await sleep(3000);
  await shootPage(page, "tensorboard_confusion");
  await page.setViewport({ width: 1440, height: 900 });
  await open("projector", 20000); // the projector loads the first tensor and runs PCA
  const projector = page.frames().find((f) => f.url().includes("projector_binary.html"));
  const tensors = await projector.evaluate(() => dataPanel().tensorNames.map((t) => t.name));
  for (const tensor of tensors) {
    // each embedding in 2-D PCA, coloured by class (its points are the images themselves)
    await projector.evaluate((name) => {
      if (dataPanel().selectedTensor !== name) dataPanel().selectedTensor = name;
    }, tensor);
    await sleep(15000);
    await projector.evaluate(() => {
      dataPanel().selectedColorOptionName = "label";
      deepFind(document, "vz-projector-projections-panel").pcaIs3d = false;
    });
    await sleep(5000);
    await shootPage(page, `tensorboard_projector_${tensor.split(":")[0]}`);
  }
  await page.close();
}

// In every frame: TensorBoard's Polymer elements sit in nested shadow roots.
const PROJECTOR_HELPERS = `
  window.deepQuery = (root, selector) => {
    const here = root.querySelector(selector);
    if (here) return here;
    for (const el of root.querySelectorAll("*")) {
      const inner = el.shadowRoot && window.deepQuery(el.shadowRoot, selector);
      if (inner) return inner;
    }
    return null;
  };
  window.deepFind = (root, tag) => window.deepQuery(root, tag);
  window.dataPanel = () => window.deepFind(document, "vz-projector-data-panel");
`;

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--allow-file-access-from-files"],
});
let board;
try {
  await dvcPlots(browser);
  board = await startTensorBoard();
  await tensorBoard(browser);
} finally {
  await browser.close();
  board?.kill();
}
