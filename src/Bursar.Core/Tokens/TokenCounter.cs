using Microsoft.ML.Tokenizers;

namespace Bursar.Core.Tokens;

/// <summary>
/// Counts tokens before a call, for estimates only (billing always uses the provider's reported usage).
/// OpenAI models use their real tiktoken encodings (o200k for gpt-4o and newer, cl100k for older ones).
/// Claude's tokenizer is not public: its count is an estimate from o200k scaled by <see cref="ClaudeFactor"/>.
/// </summary>
public sealed class TokenCounter
{
    /// <summary>
    /// Claude tokens per o200k token on English prose and code. Anthropic's tokenizer produces more tokens than o200k
    /// for the same text; 1.15 is the ratio Bursar uses until a deployment calibrates its own (Bursar:Tokens:ClaudeFactor).
    /// </summary>
    public double ClaudeFactor { get; }

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

    /// <summary>Tokens in <paramref name="text"/> for <paramref name="model"/> (an estimate for Claude).</summary>
    public int Count(string model, string text)
    {
        if (string.IsNullOrEmpty(text)) return 0;
        var n = TokenizerFor(model).CountTokens(text);
        return IsClaude(model) ? (int)Math.Ceiling(n * ClaudeFactor) : n;
    }

    /// <summary>Token ids with the model's encoding (o200k for Claude, whose ids are not public).</summary>
    public static IReadOnlyList<int> Encode(string model, string text) => TokenizerFor(model).EncodeToIds(text);
}
