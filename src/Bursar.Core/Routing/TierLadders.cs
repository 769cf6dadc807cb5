namespace Bursar.Core.Routing;

/// <summary>
/// Model tiers (small, mid, top) per family, and LEVERS.md's default table of which task tags each tier serves:
/// classification, extraction and short summaries to the small tier; analysis and code to the middle; hard multi-step reasoning to the top.
/// </summary>
public static class TierLadders
{
    public static readonly string[] Tiers = ["small", "mid", "top"];

    /// <summary>Ladders, smallest first.</summary>
    public static readonly IReadOnlyList<string[]> Families =
    [
        ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"],
        ["gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1"],
        ["gpt-5-nano", "gpt-5-mini", "gpt-5"],
        ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"],
        ["gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-pro"],
    ];

    public static readonly IReadOnlyDictionary<string, string> DefaultTaskTiers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["classification"] = "small", ["classify"] = "small", ["extraction"] = "small", ["extract"] = "small", ["summarization"] = "small",
        ["summarize"] = "small", ["summary"] = "small", ["tagging"] = "small", ["moderation"] = "small", ["routing"] = "small",
        ["analysis"] = "mid", ["code"] = "mid", ["coding"] = "mid", ["writing"] = "mid", ["chat"] = "mid",
        ["reasoning"] = "top", ["planning"] = "top", ["math"] = "top",
    };

    /// <summary>The tier a model sits on (0 small, 1 mid, 2 top) and its ladder; null for a model outside every ladder.</summary>
    public static (string[] Ladder, int Tier)? Locate(string model)
    {
        foreach (var f in Families)
        {
            var i = Array.LastIndexOf(f, model);
            if (i >= 0) return (f, i);
        }
        // newer versions of a family member sit on the same rung (claude-sonnet-4-6 is a mid-tier model)
        foreach (var (needle, f) in new[] { ("claude-haiku", Families[0]), ("claude-sonnet", Families[0]), ("claude-opus", Families[0]) })
            if (model.StartsWith(needle, StringComparison.Ordinal)) return (f, Array.FindIndex(f, m => m.StartsWith(needle, StringComparison.Ordinal)));
        return null;
    }

    /// <summary>The model on <paramref name="tier"/> of <paramref name="model"/>'s ladder when that is cheaper than it; routing by tier never moves a call up.</summary>
    public static string? Rung(string model, string tier)
    {
        var t = Array.IndexOf(Tiers, tier);
        if (t < 0 || Locate(model) is not { } at || t >= at.Tier) return null;
        return at.Ladder[t] == model ? null : at.Ladder[t];
    }
}
