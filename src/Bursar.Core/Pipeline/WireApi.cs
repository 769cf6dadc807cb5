namespace Bursar.Core.Pipeline;

/// <summary>Which of a dialect's APIs a call speaks: what stages may edit and what the answer looks like.</summary>
public enum WireApi
{
    /// <summary>OpenAI Chat Completions or Anthropic Messages.</summary>
    Chat,
    /// <summary>OpenAI Responses (<c>POST /v1/responses</c>): <c>input</c> items, <c>instructions</c>, <c>max_output_tokens</c>, no stop sequences.</summary>
    Responses,
    /// <summary>OpenAI embeddings (<c>POST /v1/embeddings</c>): input only, no output, no model choice but the caller's.</summary>
    Embeddings,
}
