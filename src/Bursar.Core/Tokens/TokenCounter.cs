namespace Bursar.Core.Tokens;

/// <summary>
/// Counts tokens before a call, for estimates only (billing always uses the provider's reported usage).
/// OpenAI models use their real tiktoken encodings (o200k for gpt-4o and newer, cl100k for older ones), held compactly
/// by <see cref="BpeEncoding"/>.
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

    /// <summary>The chunk length for pieces over <see cref="MaxPieceChars"/>: short enough that merging stays cheap, long enough that the count stays close (o200k's longest runs of one letter are 8 long).</summary>
    public const int ChunkChars = 8;

    public TokenCounter(double claudeFactor = 1.15)
    {
        if (claudeFactor is <= 0 or > 10) throw new ArgumentOutOfRangeException(nameof(claudeFactor), claudeFactor, "The Claude token factor must be in (0, 10].");
        ClaudeFactor = claudeFactor;
    }

    public static TokenCounter Default { get; } = new();

    /// <summary>Per-message framing overhead OpenAI adds (role and separators).</summary>
    public const int OpenAIMessageOverhead = 3;

    public static bool IsClaude(string model) => model.Contains("claude", StringComparison.OrdinalIgnoreCase);

    /// <summary>The encoding <paramref name="model"/> is counted with: cl100k for gpt-4 and gpt-3.5, o200k for every other model.</summary>
    public static BpeEncoding EncodingFor(string model) =>
        model.StartsWith("gpt-3.5", StringComparison.OrdinalIgnoreCase) || model.StartsWith("gpt-4-", StringComparison.OrdinalIgnoreCase) || model.Equals("gpt-4", StringComparison.OrdinalIgnoreCase)
            ? BpeEncoding.Cl100k
            : BpeEncoding.O200k;

    /// <summary>Tokens in <paramref name="text"/> for <paramref name="model"/> (an estimate for Claude); linear in the text, and stops when <paramref name="ct"/> is canceled.</summary>
    public int Count(string model, string text, CancellationToken ct = default)
    {
        if (string.IsNullOrEmpty(text)) return 0;
        ct.ThrowIfCancellationRequested();
        var encoding = EncodingFor(model);
        long n = 0;
        if (text.Length <= MaxPieceChars)
        {
            n = encoding.CountTokens(text);
        }
        else
        {
            var span = text.AsSpan();
            var pieces = encoding.Pieces(span);
            var count = 0;
            while (pieces.MoveNext())
            {
                if ((++count & 1023) == 0) ct.ThrowIfCancellationRequested();
                if (pieces.SpecialId >= 0) n++;
                else if (pieces.Length <= MaxPieceChars) n += encoding.CountPiece(span.Slice(pieces.Offset, pieces.Length));
                else n += CountChunked(encoding, span.Slice(pieces.Offset, pieces.Length), ct);
            }
        }
        var total = (int)Math.Min(n, int.MaxValue);
        return IsClaude(model) ? (int)Math.Min(Math.Ceiling(total * ClaudeFactor), int.MaxValue) : total;
    }

    private static long CountChunked(BpeEncoding encoding, ReadOnlySpan<char> piece, CancellationToken ct)
    {
        long n = 0;
        for (var i = 0; i < piece.Length;)
        {
            if ((i & 0x1FFF) < ChunkChars) ct.ThrowIfCancellationRequested();
            var chunk = Chunk(piece, i);
            n += encoding.CountPiece(piece.Slice(i, chunk));
            i += chunk;
        }
        return n;
    }

    /// <summary>The next chunk's length at <paramref name="at"/>: <see cref="ChunkChars"/>, one more rather than split a surrogate pair.</summary>
    private static int Chunk(ReadOnlySpan<char> piece, int at)
    {
        var length = Math.Min(ChunkChars, piece.Length - at);
        return at + length < piece.Length && char.IsHighSurrogate(piece[at + length - 1]) ? length + 1 : length;
    }

    /// <summary>Token ids with the model's encoding (o200k for Claude, whose ids are not public); long pieces are chunked as in <see cref="Count"/>.</summary>
    public static IReadOnlyList<int> Encode(string model, string text, CancellationToken ct = default)
    {
        ct.ThrowIfCancellationRequested();
        var encoding = EncodingFor(model);
        if (text.Length <= MaxPieceChars) return encoding.EncodeToIds(text);
        var ids = new List<int>(text.Length / 3);
        var span = text.AsSpan();
        var pieces = encoding.Pieces(span);
        var count = 0;
        while (pieces.MoveNext())
        {
            if ((++count & 1023) == 0) ct.ThrowIfCancellationRequested();
            var piece = span.Slice(pieces.Offset, pieces.Length);
            if (pieces.SpecialId >= 0) ids.Add(pieces.SpecialId);
            else if (piece.Length <= MaxPieceChars) encoding.EncodePiece(piece, ids);
            else
            {
                for (var i = 0; i < piece.Length;)
                {
                    if ((i & 0x1FFF) < ChunkChars) ct.ThrowIfCancellationRequested();
                    var chunk = Chunk(piece, i);
                    encoding.EncodePiece(piece.Slice(i, chunk), ids);
                    i += chunk;
                }
            }
        }
        return ids;
    }
}
