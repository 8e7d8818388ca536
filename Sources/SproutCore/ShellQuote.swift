/// `word` as one word for `/bin/sh`: as it is when it is plain, else in
/// single quotes (a single quote inside written as `'\''`).
public func shellQuote(_ word: String) -> String {
    guard word.isEmpty || word.contains(where: { !($0.isASCII && ($0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0))) }) else {
        return word
    }
    return "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
}
