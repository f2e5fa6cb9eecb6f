// Prints what @huggingface/gguf (an independent GGUF parser) reads from a
// file, as one JSON object: the metadata, each tensor's name, shape and
// type, and the absolute byte offset of its data, for the Python tests.
import { gguf } from "@huggingface/gguf";

const path = process.argv[2];
const { metadata, tensorInfos, tensorDataOffset } = await gguf(path, { allowLocalFile: true });
const out = {
  metadata,
  tensors: tensorInfos.map((t) => ({
    name: t.name,
    shape: t.shape.map(Number),
    dtype: t.dtype,
    offset: Number(tensorDataOffset + t.offset),
  })),
};
process.stdout.write(JSON.stringify(out, (k, v) => (typeof v === "bigint" ? Number(v) : v)));
