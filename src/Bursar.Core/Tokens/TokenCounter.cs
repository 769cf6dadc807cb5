using Microsoft.ML.Tokenizers;

namespace Bursar.Core.Tokens;

/// <summary>
/// Counts tokens before a call, for estimates only (billing always uses the provider's reported usage).
/// OpenAI models use their real tiktoken encodings (o200k for gpt-4o and newer, cl100k for older ones).
/// Claude's tokenizer is not public: its count is an estimate from o200k scaled by <see cref="ClaudeFactor"/>.
/// </summary>
/// <remarks>
/// Byte-pair encoding is quadratic in the length of one pre-tokenized piece (a word, a run of digits or of spaces), so
/// a caller's 320,000 x <c>A</c> would cost half a minute of CPU. Pieces longer than <see cref="MaxPieceChars"/> are
/// encoded in chunks of <see cref="ChunkChars"/>: the work is linear in the text, and the count can only rise where a merge would have
/// crossed a chunk boundary (no real token is that long), so it stays an honest, slightly high estimate. Text without
/// such pieces, i.e. all normal text, counts exactly as the tokenizer counts it.
/// </remarks>
public sealed class TokenCounter
{
    /// <summary>
    /// Claude tokens per o200k token on English prose and code. Anthropic's tokenizer produces more tokens than o200k
    /// for the same text; 1.15 is the ratio Bursar uses until a deployment calibrates its own (Bursar:Tokens:ClaudeFactor).
    /// </summary>
    public double ClaudeFactor { get; }

    /// <summary>The longest pre-tokenized piece encoded in one go; longer pieces are encoded in chunks of this many characters.</summary>
    public const int MaxPieceChars = 128;

    /// <summary>The chunk length for pieces over <see cref="MaxPieceChars"/>: short enough for the tokenizer's piece cache, long enough that the count stays close (o200k's longest runs of one letter are 8 long).</summary>
    public const int ChunkChars = 8;

    private static readonly Lazy<Tokenizer> O200k = new(() => TiktokenTokenizer.CreateForEncoding("o200k_base"));
    private static readonly Lazy<Tokenizer> Cl100k = new(() => TiktokenTokenizer.CreateForEncoding("cl100k_base"));

    public TokenCounter(double claudeFactor = 1.15)
    {
        if (claudeFactor is <= 0 or > 10) throw new ArgumentOutOfRangeException(nameof(claudeFactor), claudeFactor, "The Claude token factor must be in (0, 10].");
        ClaudeFactor = claudeFactor;
    }

    public static TokenCounter Default { get; } = new();

    /// <summary>Per-message framing overhead OpenAI adds (role and separators).</summary>
    public const int OpenAIMessageOverhead = 3;

    public static bool IsClaude(string model) => model.Contains("claude", StringComparison.OrdinalIgnoreCase);

    public static Tokenizer TokenizerFor(string model) =>
        model.StartsWith("gpt-3.5", StringComparison.OrdinalIgnoreCase) || model.StartsWith("gpt-4-", StringComparison.OrdinalIgnoreCase) || model.Equals("gpt-4", StringComparison.OrdinalIgnoreCase)
            ? Cl100k.Value
            : O200k.Value;

    /// <summary>Tokens in <paramref name="text"/> for <paramref name="model"/> (an estimate for Claude); linear in the text, and stops when <paramref name="ct"/> is canceled.</summary>
    public int Count(string model, string text, CancellationToken ct = default)
    {
        if (string.IsNullOrEmpty(text)) return 0;
        ct.ThrowIfCancellationRequested();
        var tokenizer = TokenizerFor(model);
        long n = 0;
        if (text.Length <= MaxPieceChars || tokenizer.PreTokenizer is not { } pre)
        {
            n = tokenizer.CountTokens(text);
        }
        else
        {
            // one pre-tokenization pass; each piece is encoded as the tokenizer would, long ones in chunks
            var span = text.AsSpan();
            var pieces = 0;
            foreach (var (offset, length) in pre.PreTokenize(text))
            {
                if ((++pieces & 1023) == 0) ct.ThrowIfCancellationRequested();
                if (length <= MaxPieceChars)
                {
                    n += tokenizer.CountTokens(span.Slice(offset, length), considerPreTokenization: false);
                    continue;
                }
                for (var i = 0; i < length; i += ChunkChars)
                {
                    if ((i & 0x1FFF) == 0) ct.ThrowIfCancellationRequested();
                    n += tokenizer.CountTokens(span.Slice(offset + i, Math.Min(ChunkChars, length - i)), considerPreTokenization: false);
                }
            }
        }
        var count = (int)Math.Min(n, int.MaxValue);
        return IsClaude(model) ? (int)Math.Min(Math.Ceiling(count * ClaudeFactor), int.MaxValue) : count;
    }

    /// <summary>Token ids with the model's encoding (o200k for Claude, whose ids are not public); long pieces are chunked as in <see cref="Count"/>.</summary>
    public static IReadOnlyList<int> Encode(string model, string text, CancellationToken ct = default)
    {
        var tokenizer = TokenizerFor(model);
        if (text.Length <= MaxPieceChars) return tokenizer.EncodeToIds(text);
        var ids = new List<int>(text.Length / 3);
        Walk(tokenizer, text, ct, segment => ids.AddRange(tokenizer.EncodeToIds(segment)));
        return ids;
    }

    private delegate void SegmentAction(ReadOnlySpan<char> segment);

    /// <summary>
    /// Hands <paramref name="text"/> to <paramref name="encode"/> in segments: runs of ordinary pieces whole (so their
    /// encoding is the tokenizer's own), pieces longer than <see cref="MaxPieceChars"/> in chunks of <see cref="ChunkChars"/>.
    /// </summary>
    private static void Walk(Tokenizer tokenizer, string text, CancellationToken ct, SegmentAction encode)
    {
        ct.ThrowIfCancellationRequested();
        if (tokenizer.PreTokenizer is not { } pre)
        {
            encode(text);
            return;
        }
        var span = text.AsSpan();
        var start = 0; // the first character not yet encoded
        var pieces = 0;
        foreach (var (offset, length) in pre.PreTokenize(text))
        {
            if ((++pieces & 1023) == 0) ct.ThrowIfCancellationRequested();
            if (length <= MaxPieceChars) continue;
            if (offset > start) encode(span[start..offset]);
            for (var i = 0; i < length; i += ChunkChars)
            {
                if ((i & 0x1FFF) == 0) ct.ThrowIfCancellationRequested();
                encode(span.Slice(offset + i, Math.Min(ChunkChars, length - i)));
            }
            start = offset + length;
        }
        if (start < span.Length) encode(span[start..]);
    }
}
