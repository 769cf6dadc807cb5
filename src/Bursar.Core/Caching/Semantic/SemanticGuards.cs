using System.Text.RegularExpressions;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// Rejects semantic matches that look alike but ask different things: different numbers, a negation on one side only,
/// different named entities ("flights to Paris" vs "flights to Rome") or different symbols ("C++" vs "C#"). False positives are wrong answers served to users.
/// </summary>
public static partial class SemanticGuards
{
    [GeneratedRegex(@"\d+(?:[.,]\d+)?", RegexOptions.CultureInvariant)]
    private static partial Regex Number();

    [GeneratedRegex(@"\b(?:not|no|never|none|nobody|nothing|neither|nor|without|cannot|can't|won't|don't|doesn't|didn't|isn't|aren't|wasn't|weren't|shouldn't|wouldn't|couldn't|n't)\b", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase)]
    private static partial Regex Negation();

    [GeneratedRegex(@"(?<=\S\s+)[A-Z][a-zA-Z0-9]+", RegexOptions.CultureInvariant)]
    private static partial Regex Capitalized();

    public static bool Compatible(string a, string b, out string? reason)
    {
        reason = null;
        // numbers in order: "plan 7, region 9" and "plan 9, region 9" share the set {7, 9}, "2 boxes to room 5" and "5 boxes to room 2"
        // the same multiset, and each pair asks different things; a paraphrase that reorders its numbers is a miss, the safe side
        if (!Numbers(a).SequenceEqual(Numbers(b), StringComparer.Ordinal)) { reason = "numbers differ"; return false; }
        if (Negation().IsMatch(a) != Negation().IsMatch(b)) { reason = "negation differs"; return false; }
        var ea = Set(Capitalized(), a);
        var eb = Set(Capitalized(), b);
        if (!ea.SetEquals(eb)) { reason = "named entities differ"; return false; }
        // symbols and non-Latin text: "C++" vs "C", "() and []" vs "= and ==", one Chinese word vs another; n-grams barely see them
        if (!Symbols(a).SequenceEqual(Symbols(b))) { reason = "symbols differ"; return false; }
        var wa = Words(a);
        var wb = Words(b);
        // "why did X" is not "did X", "where" is not "when": these question words change what is asked
        if (!wa.Intersect(Asking).ToHashSet().SetEquals(wb.Intersect(Asking))) { reason = "question differs"; return false; }
        // the same words in another order swap roles: "behavior, not nature" vs "nature, not behavior"
        if (!wa.SequenceEqual(wb) && wa.Order(StringComparer.Ordinal).SequenceEqual(wb.Order(StringComparer.Ordinal))) { reason = "word order differs"; return false; }
        // one side says the opposite of the other: "minimize" vs "maximize", "best" vs "worst"
        var onlyA = wa.Except(wb).ToHashSet(StringComparer.Ordinal);
        var onlyB = wb.Except(wa).ToHashSet(StringComparer.Ordinal);
        foreach (var (x, y) in Opposites)
            if ((onlyA.Contains(x) && onlyB.Contains(y)) || (onlyA.Contains(y) && onlyB.Contains(x))) { reason = "opposites"; return false; }
        return true;
    }

    private static readonly string[] Asking = ["why", "when", "where", "who", "whom", "whose"];

    private static readonly (string, string)[] Opposites =
    [
        ("minimize", "maximize"), ("minimum", "maximum"), ("min", "max"), ("increase", "decrease"), ("best", "worst"), ("most", "least"),
        ("more", "less"), ("before", "after"), ("buy", "sell"), ("win", "lose"), ("advantages", "disadvantages"), ("positive", "negative"),
        ("start", "stop"), ("open", "close"), ("import", "export"), ("cheap", "expensive"), ("fast", "slow"), ("high", "low"),
        ("first", "last"), ("male", "female"), ("men", "women"), ("true", "false"), ("add", "remove"), ("enable", "disable"),
        ("input", "output"), ("upload", "download"), ("accept", "reject"), ("above", "below"), ("inside", "outside"), ("easy", "hard"),
    ];

    private static string[] Words(string s) => WordPattern().Matches(s.ToLowerInvariant()).Select(m => m.Value).ToArray();

    [GeneratedRegex(@"[a-z0-9]+", RegexOptions.CultureInvariant)]
    private static partial Regex WordPattern();

    /// <summary>The characters that carry meaning outside plain words: anything but ASCII letters, digits, spaces and sentence punctuation, sorted.</summary>
    private static IEnumerable<char> Symbols(string s) =>
        s.Where(ch => !(char.IsAsciiLetterOrDigit(ch) || char.IsWhiteSpace(ch) || ch is '.' or ',' or '?' or '!' or ';' or ':' or '\'' or '"' or '-' or '\u2019'))
         .Order();

    private static IEnumerable<string> Numbers(string s) => Number().Matches(s).Select(m => m.Value);

    private static HashSet<string> Set(Regex r, string s) => r.Matches(s).Select(m => m.Value.ToLowerInvariant()).ToHashSet(StringComparer.Ordinal);
}
