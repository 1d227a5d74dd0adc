// Node's side of the runtime: an artifact directory opened with onnxruntime-node.
// The reader is only ever asked for names artifact.json lists, checked to be plain
// file names first; it refuses links and anything but a regular file, as
// runtime/metadata.py's read_graph does, and names a missing file clearly.
import { lstat, readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

import { Seq2SeqError } from "./errors.mjs";
import { loadArtifact } from "./seq2seq.mjs";

export function directoryReader(directory) {
  return async (name) => {
    const path = join(directory, name);
    let info;
    try {
      info = await lstat(path);
    } catch (e) {
      if (e.code === "ENOENT" || e.code === "ENOTDIR") {
        throw new Seq2SeqError(`${path}: ${name === "artifact.json"
          ? "metadata file missing; is this an export directory?" : "model file missing"}`);
      }
      throw new Seq2SeqError(`${path}: cannot read (${e.code})`);
    }
    if (info.isSymbolicLink()) throw new Seq2SeqError(`${path}: is a symbolic link; artifacts hold plain files only`);
    if (!info.isFile()) throw new Seq2SeqError(`${path}: not a regular file`);
    try {
      return new Uint8Array(await readFile(path));
    } catch (e) {
      throw new Seq2SeqError(`${path}: cannot read (${e.code})`);
    }
  };
}

export async function openArtifact(directory, options = {}) {
  let info;
  try {
    info = await lstat(directory);
  } catch {
    info = null;
  }
  if (!info || !info.isDirectory()) throw new Seq2SeqError(`${directory}: not an artifact directory (not found)`);
  return loadArtifact(ort, directoryReader(directory), options);
}
