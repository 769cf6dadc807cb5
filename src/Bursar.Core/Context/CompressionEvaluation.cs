using System.Text;
using AngleSharp.Html.Parser;
using Bursar.Core.Tokens;

namespace Bursar.Core.Context;

/// <summary>One page of a compression evaluation: tokens of the raw HTML, of its compressed text, and recall of the article's words.</summary>
public sealed record CompressionPage(string Name, int RawTokens, int CompressedTokens, int ArticleTokens, double Recall)
{
    public double Reduction => RawTokens == 0 ? 0 : 1 - (double)CompressedTokens / RawTokens;
}

/// <summary>What the compression evaluation found over a folder of pages.</summary>
public sealed record CompressionResult(IReadOnlyList<CompressionPage> Pages, string Model)
{
    public long RawTokens => Pages.Sum(p => (long)p.RawTokens);
    public long CompressedTokens => Pages.Sum(p => (long)p.CompressedTokens);
    public long ArticleTokens => Pages.Sum(p => (long)p.ArticleTokens);
    /// <summary>Tokens removed over all pages, as a share of the raw HTML's.</summary>
    public double Reduction => RawTokens == 0 ? 0 : 1 - (double)CompressedTokens / RawTokens;
    /// <summary>The mean of the pages' recall (each page counts once).</summary>
    public double MeanRecall => Pages.Count == 0 ? 0 : Pages.Average(p => p.Recall);
    /// <summary>The article's words over all pages, found in the compressed text (long pages weigh more).</summary>
    public double PooledRecall { get; init; }
}

/// <summary>
/// Measures <see cref="DocumentCompressor"/> on pages with a known article (Mozilla readability's test pages: <c>source.html</c>,
/// the article in <c>expected.html</c>): tokens before and after with <see cref="TokenCounter"/>, and the share of the article's
/// words (a multiset: a word the article has three times must be there three times) still in the compressed text.
/// </summary>
public static class CompressionEvaluation
{
    public static CompressionResult Run(string folder, DocumentCompressor compressor, TokenCounter counter, string model = "gpt-4o", IProgress<int>? progress = null)
    {
        var pages = new List<CompressionPage>();
        long found = 0, total = 0;
        foreach (var dir in Directory.GetDirectories(folder).Order(StringComparer.Ordinal))
        {
            var source = Path.Combine(dir, "source.html");
            var expected = Path.Combine(dir, "expected.html");
            if (!File.Exists(source) || !File.Exists(expected)) continue;
            var html = File.ReadAllText(source);
            var compressed = compressor.Compress(html);
            var article = ArticleText(File.ReadAllText(expected));
            var (hit, words) = Recall(article, compressed);
            found += hit;
            total += words;
            pages.Add(new CompressionPage(Path.GetFileName(dir), counter.Count(model, html), counter.Count(model, compressed), counter.Count(model, article), words == 0 ? 1 : (double)hit / words));
            progress?.Report(pages.Count);
        }
        return new CompressionResult(pages, model) { PooledRecall = total == 0 ? 1 : (double)found / total };
    }

    /// <summary>The text content of the expected article's HTML.</summary>
    public static string ArticleText(string html)
    {
        using var doc = new HtmlParser().ParseDocument(html);
        return doc.Body?.TextContent ?? doc.DocumentElement?.TextContent ?? "";
    }

    /// <summary>How many of <paramref name="article"/>'s words (lower-cased letter-or-digit runs, counted with multiplicity) <paramref name="text"/> has, and how many there are.</summary>
    public static (long Found, long Total) Recall(string article, string text)
    {
        var have = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var w in Words(text)) have[w] = have.GetValueOrDefault(w) + 1;
        long found = 0, total = 0;
        foreach (var w in Words(article))
        {
            total++;
            if (have.TryGetValue(w, out var n) && n > 0)
            {
                found++;
                have[w] = n - 1;
            }
        }
        return (found, total);
    }

    public static IEnumerable<string> Words(string text)
    {
        var sb = new StringBuilder();
        foreach (var c in text)
        {
            if (char.IsLetterOrDigit(c)) sb.Append(char.ToLowerInvariant(c));
            else if (sb.Length > 0)
            {
                yield return sb.ToString();
                sb.Clear();
            }
        }
        if (sb.Length > 0) yield return sb.ToString();
    }
}
