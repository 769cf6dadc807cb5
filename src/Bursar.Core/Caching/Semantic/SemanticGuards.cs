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

    // straight or curly apostrophe: "doesn't" and "doesn’t" are one negation (QQP has both)
    [GeneratedRegex(@"\b(?:not|no|never|none|nobody|nothing|neither|nor|without|cannot|can['’]t|won['’]t|don['’]t|doesn['’]t|didn['’]t|isn['’]t|aren['’]t|wasn['’]t|weren['’]t|shouldn['’]t|wouldn['’]t|couldn['’]t|n['’]t)\b", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase)]
    private static partial Regex Negation();

    [GeneratedRegex(@"(?<=\S\s+)[A-Z][a-zA-Z0-9]+", RegexOptions.CultureInvariant)]
    private static partial Regex Capitalized();

    /// <summary>The guards by name, in the order they are checked; <see cref="Failing"/> sets bit i when guard i rejects a pair.</summary>
    public static IReadOnlyList<string> Names => GuardNames;

    private static readonly string[] GuardNames = ["numbers", "negation", "entities", "symbols", "question", "order", "opposites"];

    /// <summary>Every guard on (the built-in hashed generator's set).</summary>
    public const int All = (1 << 7) - 1;

    private static readonly string[] Reasons = ["numbers differ", "negation differs", "named entities differ", "symbols differ", "question differs", "word order differs", "opposites"];

    /// <summary>The bit mask of the guards named (unknown names throw).</summary>
    public static int Mask(IEnumerable<string> names) => names.Aggregate(0, (m, n) => Array.IndexOf(GuardNames, n) is var i and >= 0 ? m | (1 << i) : throw new ArgumentException($"No semantic guard '{n}' (guards: {string.Join(", ", GuardNames)}).", nameof(names)));

    /// <summary>Whether the pair passes every guard.</summary>
    public static bool Compatible(string a, string b, out string? reason) => Compatible(a, b, All, out reason);

    /// <summary>Whether the pair passes the guards in <paramref name="guards"/> (a mask over <see cref="Names"/>); the first that rejects it is the reason.</summary>
    public static bool Compatible(string a, string b, int guards, out string? reason)
    {
        var failing = Failing(a, b, guards, firstOnly: true);
        reason = failing == 0 ? null : Reasons[System.Numerics.BitOperations.TrailingZeroCount(failing)];
        return failing == 0;
    }

    /// <summary>The mask of the guards (of <paramref name="guards"/>) that reject the pair; with <paramref name="firstOnly"/> it stops at the first.</summary>
    public static int Failing(string a, string b, int guards = All, bool firstOnly = false)
    {
        var failing = 0;
        bool Fail(int i)
        {
            failing |= 1 << i;
            return firstOnly;
        }
        bool On(int i) => (guards & (1 << i)) != 0;
        // numbers in order: "plan 7, region 9" and "plan 9, region 9" share the set {7, 9}, "2 boxes to room 5" and "5 boxes to room 2"
        // the same multiset, and each pair asks different things; a paraphrase that reorders its numbers is a miss, the safe side
        if (On(0) && !Numbers(a).SequenceEqual(Numbers(b), StringComparer.Ordinal) && Fail(0)) return failing;
        if (On(1) && Negation().IsMatch(a) != Negation().IsMatch(b) && Fail(1)) return failing;
        if (On(2) && !Set(Capitalized(), a).SetEquals(Set(Capitalized(), b)) && Fail(2)) return failing;
        // symbols and non-Latin text: "C++" vs "C", "() and []" vs "= and ==", one Chinese word vs another; n-grams barely see them
        if (On(3) && !Symbols(a).SequenceEqual(Symbols(b)) && Fail(3)) return failing;
        if ((guards & 0b111_0000) == 0) return failing;
        var wa = Words(a);
        var wb = Words(b);
        // "why did X" is not "did X", "where" is not "when": these question words change what is asked
        if (On(4) && !wa.Intersect(Asking).ToHashSet().SetEquals(wb.Intersect(Asking)) && Fail(4)) return failing;
        // the same words in another order swap roles: "behavior, not nature" vs "nature, not behavior"
        if (On(5) && !wa.SequenceEqual(wb) && wa.Order(StringComparer.Ordinal).SequenceEqual(wb.Order(StringComparer.Ordinal)) && Fail(5)) return failing;
        // one side says the opposite of the other: "minimize" vs "maximize", "best" vs "worst"
        if (On(6))
        {
            var onlyA = wa.Except(wb).ToHashSet(StringComparer.Ordinal);
            var onlyB = wb.Except(wa).ToHashSet(StringComparer.Ordinal);
            foreach (var (x, y) in Opposites)
                if ((onlyA.Contains(x) && onlyB.Contains(y)) || (onlyA.Contains(y) && onlyB.Contains(x))) { Fail(6); break; }
        }
        return failing;
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
