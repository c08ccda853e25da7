// The job's optional webhook: a URL called when the job ends, and its signing secret. The URL is checked here as the
// server checks it before any name lookup (spinbot/control/callback_url.py: parse_callback_url), with its messages,
// so a typo shows as it is typed; what needs the server (its length limit, the addresses a name resolves to, an IPv6
// literal) is its answer, shown under the field. The secret is checked as callback_signing.check_secret does.

const PRINTABLE = /^[\x21-\x7e]+$/;
const SCHEME = /^[a-z][a-z0-9+.-]*$/i; // what Python's urlsplit takes as a scheme before the first ":"
const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
const NUMERIC_LABEL = /^([0-9]+|0x[0-9a-f]*)$/; // the last label of a host written as an IPv4 address
const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const DOTTED_IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const MAX_ECHOED_CHARS = 80; // spinbot.errors.MAX_ECHOED_CHARS
const SECRET_PREFIX = "whsec_";
const SECRET_BYTES = [24, 64];
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** spinbot.errors.shorten: the user's text, cut where an error line would get too long. */
function shorten(text) {
  if (text.length <= MAX_ECHOED_CHARS) return text;
  return `${text.slice(0, MAX_ECHOED_CHARS)}... (${text.length.toLocaleString("en-US")} characters)`;
}

/** The URL's scheme (lower case, "" for none) and its authority (host[:port], "" for none), as urlsplit reads them. */
function splitUrl(url) {
  const colon = url.indexOf(":");
  const hasScheme = colon > 0 && SCHEME.test(url.slice(0, colon));
  const rest = hasScheme ? url.slice(colon + 1) : url;
  const netloc = rest.startsWith("//") ? rest.slice(2).split(/[/?#]/)[0] : "";
  return { scheme: hasScheme ? url.slice(0, colon).toLowerCase() : "", netloc };
}

function hostError(host) {
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  const labels = name.split(".");
  if (!name || name.length > 253 || !labels.every((label) => LABEL.test(label))) {
    return `${shorten(name || "(no host)")} is no host name`;
  }
  if (NUMERIC_LABEL.test(labels.at(-1)) && !DOTTED_IPV4.test(name)) {
    return `${shorten(name)}: write an IPv4 address in its dotted form (a.b.c.d)`;
  }
  if (name === "localhost" || name.endsWith(".localhost")) return `${name} is not a public address`;
  return null;
}

function authorityError(netloc) {
  if (netloc.includes("@")) return "credentials in the URL (user:password@) are refused; verify the signature";
  const [host, ...ports] = netloc.split(":");
  const port = ports.join(":");
  if (ports.length > 1) return `${shorten(netloc)} is no host[:port] (an IPv6 address goes in [ ])`;
  const hostProblem = hostError(host.toLowerCase());
  if (hostProblem) return hostProblem;
  if (port && (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535)) {
    return `port ${shorten(port)} is not a number from 1 to 65535`;
  }
  return null;
}

/** The server's message for a callback URL it would refuse before looking its name up, or null. */
export function callbackUrlError(url) {
  if (!url) return null;
  if (!PRINTABLE.test(url) || url.includes("\\")) {
    return "callback_url: printable ASCII only, no spaces or backslashes (an international name in its xn-- form, "
      + "other characters percent-encoded)";
  }
  const { scheme, netloc } = splitUrl(url);
  if (/[[\]]/.test(netloc)) return null; // an IPv6 literal, or a bracket urlsplit refuses: the server's to judge
  if (scheme !== "http" && scheme !== "https") {
    const given = scheme ? `${shorten(`'${scheme}'`)} ones` : "one without a scheme";
    return `callback_url: only http and https URLs can be called, not ${given}`;
  }
  const problem = authorityError(netloc);
  return problem ? `callback_url: ${problem}` : null;
}

/** The server's message for a signing secret that is not whsec_ and the base64 of 24 to 64 bytes, or null. */
export function callbackSecretError(secret) {
  if (!secret) return null;
  const encoded = secret.slice(SECRET_PREFIX.length);
  const padding = encoded.length - encoded.replace(/=+$/, "").length;
  const valid = secret.startsWith(SECRET_PREFIX) && BASE64.test(encoded) && encoded.length % 4 === 0;
  const size = valid ? (encoded.length / 4) * 3 - padding : 0;
  if (size >= SECRET_BYTES[0] && size <= SECRET_BYTES[1]) return null;
  return `callback_secret: must be ${SECRET_PREFIX} and the base64 of ${SECRET_BYTES[0]} to ${SECRET_BYTES[1]} random bytes`;
}

/** The webhook's fields of a job request ({} without one) and their errors. */
export function webhookRequest(url, secret) {
  const errors = {};
  const urlError = callbackUrlError(url);
  const secretError = secret && !url ? "callback_secret: given without a callback_url" : callbackSecretError(secret);
  if (urlError) errors.callback_url = urlError;
  if (secretError) errors.callback_secret = secretError;
  if (!url) return { fields: {}, errors };
  return { fields: secret ? { callback_url: url, callback_secret: secret } : { callback_url: url }, errors };
}
