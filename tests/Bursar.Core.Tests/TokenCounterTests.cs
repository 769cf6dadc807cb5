using System.Diagnostics;
using System.Text.Json.Nodes;
using Bursar.Core.Tokens;

namespace Bursar.Core.Tests;

/// <summary>Token counting stays linear and bounded on hostile input (issue 11), and unchanged on normal text.</summary>
[Collection(TimingCollection.Name)]
public sealed class TokenCounterTests
{
    private const string Prose = "The quick brown fox jumps over the lazy dog. Bursar meters every call, prices it exactly and keeps budgets.\n";

    /// <summary>Best of three runs after a warm-up: a generous bound that holds on a loaded 2-core machine.</summary>
    private static double BestMs(Action work)
    {
        work();
        var best = double.MaxValue;
        for (var i = 0; i < 3; i++)
        {
            var sw = Stopwatch.StartNew();
            work();
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
        }
        return best;
    }

    [Theory]
    [InlineData("gpt-4o", 40_000)]
    [InlineData("gpt-4o", 80_000)]
    [InlineData("gpt-4o", 160_000)]
    [InlineData("gpt-4o", 320_000)]
    [InlineData("claude-sonnet-4-5", 320_000)]
    [InlineData("gpt-4", 320_000)]
    public void A_long_run_without_spaces_counts_in_under_50_ms(string model, int length)
    {
        var text = new string('A', length);
        var n = 0;
        var ms = BestMs(() => n = TokenCounter.Default.Count(model, text));
        Assert.True(ms < 50, $"{length:N0} x 'A' for {model} took {ms:F1} ms");
        // an honest count: at least one token per 16 characters, at most one per character
        Assert.InRange(n, length / 16, length * 2);
    }

    /// <summary>
    /// Runs that pre-tokenize into many short pieces (digits go in threes) cost what normal text costs, about 30-100 ms per
    /// 320k characters on this hardware; the bound only has to tell linear from quadratic (which took seconds to minutes).
    /// </summary>
    [Theory]
    [InlineData(' ')]
    [InlineData('.')]
    [InlineData('7')]
    [InlineData('\u00e9')]
    [InlineData('\u4e2d')]
    public void Other_long_runs_are_linear_too(char c)
    {
        var text = new string(c, 320_000);
        var ms = BestMs(() => TokenCounter.Default.Count("gpt-4o", text));
        Assert.True(ms < 250, $"320,000 x U+{(int)c:X4} took {ms:F1} ms");
    }

    [Fact]
    public void Encoding_a_long_run_is_linear_and_agrees_with_the_count()
    {
        var text = new string('A', 320_000);
        IReadOnlyList<int> ids = [];
        var ms = BestMs(() => ids = TokenCounter.Encode("gpt-4o", text));
        Assert.True(ms < 250, $"encoding took {ms:F1} ms");
        Assert.Equal(TokenCounter.Default.Count("gpt-4o", text), ids.Count);
    }

    [Fact]
    public void The_prompt_estimator_on_a_long_system_prompt_and_message_is_linear()
    {
        var a = new string('A', 320_000);
        var body = new JsonObject
        {
            ["system"] = a,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = a }) }),
        };
        var estimator = new PromptTokenEstimator(TokenCounter.Default);
        var ms = BestMs(() => estimator.Estimate("claude-haiku-4-5", body));
        Assert.True(ms < 100, $"two 320k runs took {ms:F1} ms");
    }

    [Theory]
    [InlineData("gpt-4o")]
    [InlineData("gpt-4")]
    [InlineData("claude-haiku-4-5")]
    public void Counts_on_normal_text_are_the_tokenizers_own(string model)
    {
        var text = string.Concat(Enumerable.Repeat(Prose, 400)) + "https://example.com/a/b?c=d " + new string('x', 100) + " {\"json\": [1, 2, 3]}";
        // the reference: Microsoft.ML.Tokenizers' tiktoken with the same vocabulary
        var reference = Microsoft.ML.Tokenizers.TiktokenTokenizer.CreateForModel(model == "gpt-4" ? "gpt-4" : "gpt-4o"); // Claude's estimate is o200k's
        var exact = reference.CountTokens(text);
        var expected = TokenCounter.IsClaude(model) ? (int)Math.Ceiling(exact * TokenCounter.Default.ClaudeFactor) : exact;
        Assert.Equal(expected, TokenCounter.Default.Count(model, text));
        Assert.Equal(reference.EncodeToIds(text), TokenCounter.Encode(model, text));
    }

    [Fact]
    public void A_canceled_count_stops()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => TokenCounter.Default.Count("gpt-4o", new string('A', 320_000), cts.Token));
        var body = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = new string('A', 320_000) }) };
        Assert.Throws<OperationCanceledException>(() => new PromptTokenEstimator(TokenCounter.Default).Estimate("claude-haiku-4-5", body, cts.Token));
    }
}

/// <summary>Timing tests run alone, not beside the rest of the suite.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingCollection
{
    public const string Name = "timing";
}
