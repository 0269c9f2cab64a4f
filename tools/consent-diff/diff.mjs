// Differential-test source: random consent states encoded by IAB's own libraries.
//
//   node diff.mjs --seed 1 --count 200            one JSON line per case, on stdout
//   node diff.mjs --decode < strings.txt          IAB's decode of each line (GPP or TC string)
//
// For every GPP section @iabgpp/cmpapi implements, `--count` random states are set field by
// field through GppModel.setFieldValue and encoded by GppModel.encode (IAB's encoder). Every
// encoding is also mutated (truncated, a character replaced, one dropped, one added) and the
// mutant decoded by IAB's decoder. Each line is
//   {"kind": "encoded" | "mutant", "section": name, "gpp": string, "ref": fields | null}
// where `ref` is IAB's decode (null: IAB refuses it). tcfeuv2 cases also carry "tc" and
// "tcf_core": the TC string alone decoded by @iabtcf/core (null: refused).
// tests/test_consent_diff.py compares idgraph's decoders with these.
import { DecodingError, FibonacciIntegerRangeEncoder, GppModel, RangeEntry } from "@iabgpp/cmpapi";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const { TCString } = createRequire(import.meta.url)("@iabtcf/core");

const US_SECTIONS = [
  "usnat", "usca", "usva", "usco", "usut", "usct", "usfl", "usmt", "usor", "ustx", "usde",
  "usia", "usne", "usnh", "usnj", "ustn", "usmn", "usmd", "usin", "usky", "usri",
];
const ALL_SECTIONS = ["tcfeuv2", "tcfcav1", "uspv1", ...US_SECTIONS];
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const SKIP_FIELDS = new Set([
  "GpcSegmentType", "GpcSegmentIncluded", "SensitiveDataConsentSegmentIncluded",
]);

// mulberry32: a small seeded PRNG, so a failing case is reproducible from its seed.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// IAB's Fibonacci range decoder expands every range into an array with no limit: a mutated
// tcfcav1 string can name a range of ~10^8 ids and V8 aborts the whole process ("invalid size
// error"), which no try/catch survives. Count the ids first and refuse more than 65,535, the
// 16-bit id space; idgraph's decoder refuses the same strings (bad_range / too_large).
const MAX_IDS = 65535;
const fibonacciRangeDecode = FibonacciIntegerRangeEncoder.decode;
function fibonacciAt(bits, from) {
  const end = bits.indexOf("11", from);
  if (end < 0) return null;
  let value = 0;
  let [a, b] = [1, 2];
  for (let i = from; i <= end; i++) {
    if (bits[i] === "1") value += a;
    [a, b] = [b, a + b];
  }
  return [value, end + 2];
}
FibonacciIntegerRangeEncoder.decode = (bits) => {
  const count = parseInt(bits.substring(0, 12), 2);
  let at = 12;
  let total = 0;
  for (let i = 0; i < count && at < bits.length; i++) {
    const isRange = bits[at++] === "1";
    const first = fibonacciAt(bits, at);
    if (!first) break;
    at = first[1];
    if (isRange) {
      const second = fibonacciAt(bits, at);
      if (!second) break;
      at = second[1];
      total += second[0] + 1;
    } else total += 1;
    if (total > MAX_IDS) throw new DecodingError("more than 65535 ids in a Fibonacci range");
  }
  return fibonacciRangeDecode(bits);
};

function args() {
  const out = { seed: 1, count: 100, decode: false, sections: ALL_SECTIONS };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--seed") out.seed = Number(argv[++i]);
    else if (argv[i] === "--count") out.count = Number(argv[++i]);
    else if (argv[i] === "--decode") out.decode = true;
    else if (argv[i] === "--sections") out.sections = argv[++i].split(",");
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return out;
}

function plain(value) {
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

// IAB's decode of a GPP string: {section name: {field: value}}, or null when it refuses.
// Sub-sections that were absent are reported as null, as the GppSegmentIncluded flags say.
function refDecode(gpp) {
  try {
    const model = new GppModel(gpp);
    const obj = model.toObject();
    const out = {};
    for (const [name, fields] of Object.entries(obj)) {
      const clean = {};
      for (const [field, value] of Object.entries(fields)) {
        if (!SKIP_FIELDS.has(field)) clean[field] = plain(value);
      }
      if ("Gpc" in fields && model.getFieldValue(name, "GpcSegmentIncluded") === false) {
        clean.Gpc = null;
      }
      if (["usin", "usky", "usri"].includes(name) &&
          model.getFieldValue(name, "SensitiveDataConsentSegmentIncluded") === false) {
        clean.SensitiveDataProcessing = null;
      }
      out[name] = clean;
    }
    return out;
  } catch {
    return null;
  }
}

// @iabtcf/core's decode of a TC string, in the field names of @iabgpp/cmpapi; null if refused.
function tcfCoreDecode(tc) {
  try {
    const m = TCString.decode(tc);
    const ids = (vector) => {
      const out = [];
      vector.forEach((has, id) => { if (has) out.push(id); });
      return out;
    };
    const restrictions = [];
    for (const pr of m.publisherRestrictions.getRestrictions()) {
      restrictions.push([pr.purposeId, pr.restrictionType,
        m.publisherRestrictions.getVendors(pr).sort((a, b) => a - b)]);
    }
    return {
      Version: m.version,
      Created: m.created.toISOString(),
      LastUpdated: m.lastUpdated.toISOString(),
      CmpId: m.cmpId,
      CmpVersion: m.cmpVersion,
      ConsentScreen: m.consentScreen,
      ConsentLanguage: m.consentLanguage.toUpperCase(),
      VendorListVersion: m.vendorListVersion,
      PolicyVersion: m.policyVersion,
      IsServiceSpecific: m.isServiceSpecific,
      UseNonStandardStacks: m.useNonStandardStacks,
      SpecialFeatureOptins: ids(m.specialFeatureOptins),
      PurposeConsents: ids(m.purposeConsents),
      PurposeLegitimateInterests: ids(m.purposeLegitimateInterests),
      PurposeOneTreatment: m.purposeOneTreatment,
      PublisherCountryCode: m.publisherCountryCode,
      VendorConsents: ids(m.vendorConsents),
      VendorLegitimateInterests: ids(m.vendorLegitimateInterests),
      PublisherRestrictions: restrictions.sort((a, b) => a[0] - b[0] || a[1] - b[1]),
      PublisherConsents: ids(m.publisherConsents),
      PublisherLegitimateInterests: ids(m.publisherLegitimateInterests),
      NumCustomPurposes: m.numCustomPurposes,
      PublisherCustomConsents: ids(m.publisherCustomConsents),
      PublisherCustomLegitimateInterests: ids(m.publisherCustomLegitimateInterests),
      VendorsAllowed: ids(m.vendorsAllowed),
      VendorsDisclosed: ids(m.vendorsDisclosed),
    };
  } catch {
    return null;
  }
}

function pick(r, n) {
  return Math.floor(r() * n);
}

function bools(r, n, p = 0.5) {
  return Array.from({ length: n }, () => r() < p);
}

function idList(r, max, p) {
  const out = [];
  const top = pick(r, max) + 1;
  // Runs and singles, so both range and bitfield encodings occur.
  for (let id = 1; id <= top; id++) if (r() < p) out.push(id);
  return out;
}

function letters(r) {
  return ALPHABET[pick(r, 26)] + ALPHABET[pick(r, 26)];
}

function randomTcf(r, model) {
  const s = "tcfeuv2";
  const when = new Date(Date.UTC(2019 + pick(r, 8), pick(r, 12), 1 + pick(r, 28),
    pick(r, 24), pick(r, 60), pick(r, 60), pick(r, 10) * 100));
  model.setFieldValue(s, "Created", when);
  model.setFieldValue(s, "LastUpdated", new Date(when.getTime() + pick(r, 1e9) * 100));
  model.setFieldValue(s, "CmpId", pick(r, 4096));
  model.setFieldValue(s, "CmpVersion", pick(r, 4096));
  model.setFieldValue(s, "ConsentScreen", pick(r, 64));
  model.setFieldValue(s, "ConsentLanguage", letters(r));
  model.setFieldValue(s, "VendorListVersion", pick(r, 4096));
  model.setFieldValue(s, "PolicyVersion", 2 + pick(r, 4));
  // GppModel only encodes service-specific strings (TcfEuV2.encodeSection refuses false).
  model.setFieldValue(s, "IsServiceSpecific", true);
  model.setFieldValue(s, "UseNonStandardStacks", r() < 0.5);
  model.setFieldValue(s, "SpecialFeatureOptins", bools(r, 12));
  model.setFieldValue(s, "PurposeConsents", bools(r, 24));
  model.setFieldValue(s, "PurposeLegitimateInterests", bools(r, 24));
  model.setFieldValue(s, "PurposeOneTreatment", r() < 0.5);
  model.setFieldValue(s, "PublisherCountryCode", letters(r));
  const density = [0.02, 0.5, 0.95][pick(r, 3)];
  model.setFieldValue(s, "VendorConsents", idList(r, 1200, density));
  model.setFieldValue(s, "VendorLegitimateInterests", idList(r, 1200, density));
  model.setFieldValue(s, "PublisherConsents", bools(r, 24));
  model.setFieldValue(s, "PublisherLegitimateInterests", bools(r, 24));
  const custom = pick(r, 8);
  model.setFieldValue(s, "NumCustomPurposes", custom);
  model.setFieldValue(s, "PublisherCustomConsents", bools(r, custom));
  model.setFieldValue(s, "PublisherCustomLegitimateInterests", bools(r, custom));
  model.setFieldValue(s, "VendorsDisclosed", idList(r, 1200, density));
  if (r() < 0.3) model.setFieldValue(s, "VendorsAllowed", idList(r, 300, density));
}

function randomTcfCa(r, model) {
  const s = "tcfcav1";
  model.setFieldValue(s, "CmpId", pick(r, 4096));
  model.setFieldValue(s, "CmpVersion", pick(r, 4096));
  model.setFieldValue(s, "ConsentScreen", pick(r, 64));
  model.setFieldValue(s, "ConsentLanguage", letters(r).toUpperCase());
  model.setFieldValue(s, "VendorListVersion", pick(r, 4096));
  model.setFieldValue(s, "TcfPolicyVersion", pick(r, 64));
  model.setFieldValue(s, "UseNonStandardStacks", r() < 0.5);
  model.setFieldValue(s, "SpecialFeatureExpressConsent", bools(r, 12));
  model.setFieldValue(s, "PurposesExpressConsent", bools(r, 24));
  model.setFieldValue(s, "PurposesImpliedConsent", bools(r, 24));
  const density = [0.02, 0.5, 0.95][pick(r, 3)];
  model.setFieldValue(s, "VendorExpressConsent", idList(r, 1200, density));
  model.setFieldValue(s, "VendorImpliedConsent", idList(r, 1200, density));
  const restrictions = [];
  for (let i = 0, n = pick(r, 4); i < n; i++) {
    restrictions.push(new RangeEntry(1 + pick(r, 24), pick(r, 4), idList(r, 300, density)));
  }
  model.setFieldValue(s, "PubRestrictions", restrictions);
  model.setFieldValue(s, "PubPurposesExpressConsent", bools(r, 24));
  model.setFieldValue(s, "PubPurposesImpliedConsent", bools(r, 24));
  const custom = pick(r, 8);
  model.setFieldValue(s, "NumCustomPurposes", custom);
  model.setFieldValue(s, "CustomPurposesExpressConsent", bools(r, custom));
  model.setFieldValue(s, "CustomPurposesImpliedConsent", bools(r, custom));
  if (r() < 0.6) model.setFieldValue(s, "DisclosedVendors", idList(r, 1200, density));
  // Last: TcfCaV1.setFieldValue stamps Created/LastUpdated with the current time otherwise.
  const when = new Date(Date.UTC(2019 + pick(r, 8), pick(r, 12), 1 + pick(r, 28),
    pick(r, 24), pick(r, 60), pick(r, 60), pick(r, 10) * 100));
  model.setFieldValue(s, "Created", when);
  model.setFieldValue(s, "LastUpdated", new Date(when.getTime() + pick(r, 1e9) * 100));
}

function randomUs(r, model, section) {
  const defaults = new GppModel();
  defaults.setFieldValue(section, "SaleOptOut", 0);
  for (const [field, value] of Object.entries(defaults.toObject()[section])) {
    if (SKIP_FIELDS.has(field) || field === "Version" || field === "MspaVersion") continue;
    if (field === "Gpc") model.setFieldValue(section, field, r() < 0.5);
    else if (field === "MspaCoveredTransaction") model.setFieldValue(section, field, 1 + pick(r, 2));
    else if (Array.isArray(value)) {
      model.setFieldValue(section, field, value.map(() => pick(r, 3)));
    } else model.setFieldValue(section, field, pick(r, 3));
  }
  const obj = defaults.toObject()[section];
  if ("Gpc" in obj) model.setFieldValue(section, "GpcSegmentIncluded", r() < 0.7);
  if (["usin", "usky", "usri"].includes(section)) {
    model.setFieldValue(section, "SensitiveDataConsentSegmentIncluded", r() < 0.7);
  }
}

function randomUsp(r, model) {
  const flags = "YN-";
  model.setFieldValue("uspv1", "Notice", flags[pick(r, 3)]);
  model.setFieldValue("uspv1", "OptOutSale", flags[pick(r, 3)]);
  model.setFieldValue("uspv1", "LspaCovered", flags[pick(r, 3)]);
}

function mutate(r, gpp) {
  const [header, ...rest] = gpp.split("~");
  const section = rest.join("~");
  const at = pick(r, section.length);
  switch (pick(r, 4)) {
    case 0: return `${header}~${section.slice(0, Math.max(1, at))}`;
    case 1: return `${header}~${section.slice(0, at)}${ALPHABET[pick(r, 64)]}${section.slice(at + 1)}`;
    case 2: return `${header}~${section.slice(0, at)}${section.slice(at + 1) || "A"}`;
    default: return `${header}~${section.slice(0, at)}${ALPHABET[pick(r, 64)]}${section.slice(at)}`;
  }
}

// Respect the pipe's backpressure: at 10,000 states per section the reader (pytest) is slower
// than this generator, and unawaited writes would buffer the whole run in node's heap.
async function emit(text) {
  if (!process.stdout.write(text)) {
    await new Promise((resolve) => process.stdout.once("drain", resolve));
  }
}

async function line(kind, section, gpp) {
  const out = { kind, section, gpp, ref: refDecode(gpp) };
  if (section === "tcfeuv2") {
    out.tc = gpp.split("~")[1];
    out.tcf_core = tcfCoreDecode(out.tc);
  }
  await emit(`${JSON.stringify(out)}\n`);
}

async function main() {
  const opts = args();
  if (opts.decode) {
    for await (const input of createInterface({ input: process.stdin })) {
      if (!input) continue;
      process.stdout.write(`${JSON.stringify({ gpp: input, ref: refDecode(input),
        tcf_core: input.includes("~") ? null : tcfCoreDecode(input) })}\n`);
    }
    return;
  }
  for (const [index, section] of opts.sections.entries()) {
    const r = rng(opts.seed * 1000 + index);
    for (let i = 0; i < opts.count; i++) {
      const model = new GppModel();
      if (section === "tcfeuv2") randomTcf(r, model);
      else if (section === "tcfcav1") randomTcfCa(r, model);
      else if (section === "uspv1") randomUsp(r, model);
      else randomUs(r, model, section);
      const gpp = model.encode();
      await line("encoded", section, gpp);
      await line("mutant", section, mutate(r, gpp));
    }
  }
}

await main();
