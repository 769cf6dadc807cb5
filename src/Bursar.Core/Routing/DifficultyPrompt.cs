namespace Bursar.Core.Routing;

/// <summary>
/// The optional LLM classifier's question to the cheapest tier: a one-word difficulty (simple, medium, hard) for a request, and how a
/// one-word answer maps onto a ladder. An answer that is none of the three words counts as low confidence: the top rung.
/// </summary>
public static class DifficultyPrompt
{
    public const string Instruction = "Classify how hard the following request is for an AI assistant. Answer with exactly one word: simple, medium or hard.";

    /// <summary>How many characters of the request the classifier sees.</summary>
    public const int MaxPromptChars = 4000;

    public static string? Parse(string? answer)
    {
        if (answer is null) return null;
        var word = new string(answer.Trim().TakeWhile(char.IsLetter).ToArray()).ToLowerInvariant();
        return word is "simple" or "medium" or "hard" ? word : null;
    }

    /// <summary>simple -> the bottom rung, hard -> the top, medium -> the middle (the upper of two rungs: when unsure, stronger).</summary>
    public static int Rung(string label, int rungs) => label switch
    {
        "simple" => 0,
        "hard" => rungs - 1,
        _ => rungs / 2,
    };

    /// <summary>What the provider Simulator answers (no model behind it): by the request's length, as a cheap model roughly would.</summary>
    public static string SimulatedAnswer(string request) => request.Length switch
    {
        < 200 => "simple",
        < 800 => "medium",
        _ => "hard",
    };
}
