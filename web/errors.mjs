// The one error type the JavaScript runtime raises on purpose (Python's
// runtime.errors.Seq2SeqError): bad artifacts, bad text, bad options.
export class Seq2SeqError extends Error {
  constructor(message) {
    super(message);
    this.name = "Seq2SeqError";
  }
}
