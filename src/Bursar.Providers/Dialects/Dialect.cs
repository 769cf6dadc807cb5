namespace Bursar.Providers.Dialects;

/// <summary>The two wire formats Bursar speaks.</summary>
public enum Dialect
{
    /// <summary>OpenAI Chat Completions (<c>POST /v1/chat/completions</c>), also spoken by OpenAI-compatible servers.</summary>
    OpenAI,
    /// <summary>Anthropic Messages (<c>POST /v1/messages</c>).</summary>
    Anthropic,
}

public static class DialectNames
{
    public static string Name(this Dialect d) => d == Dialect.OpenAI ? "openai" : "anthropic";
}
