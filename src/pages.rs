//! Listing page by page: every list of the controller is paginated (bounded memory whatever the
//! cluster's size), and this cursor keeps the continue-token bookkeeping in one place.
//!
//! ```
//! # async fn f(api: kube::Api<k8s_openapi::api::core::v1::Pod>) -> Result<(), kube::Error> {
//! use block_controller::pages::Pages;
//! let mut pages = Pages::new(kube::api::ListParams::default().limit(50));
//! while let Some(params) = pages.next_params() {
//!     let page = api.list(&params).await?;
//!     pages.advance(&page.metadata);
//!     for pod in page.items { /* act on it as it streams in */ }
//! }
//! # Ok(()) }
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::ListParams;

/// A cursor over the pages of one list.
#[derive(Debug, Clone)]
pub struct Pages {
    base: ListParams,
    token: Option<String>,
    done: bool,
}

impl Pages {
    /// Starts at the first page; `base` carries the selectors and the page size.
    pub fn new(base: ListParams) -> Pages {
        Pages {
            base,
            token: None,
            done: false,
        }
    }

    /// The parameters of the next page to read, or `None` after the last one.
    pub fn next_params(&self) -> Option<ListParams> {
        if self.done {
            return None;
        }
        Some(match &self.token {
            Some(t) => self.base.clone().continue_token(t),
            None => self.base.clone(),
        })
    }

    /// Records the page just read: its continue token, if the server has more.
    pub fn advance(&mut self, meta: &ListMeta) {
        match meta.continue_.as_deref() {
            Some(t) if !t.is_empty() => self.token = Some(t.to_string()),
            _ => self.done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_continue_tokens_until_the_last_page() {
        let mut pages = Pages::new(ListParams::default().limit(2));
        let first = pages.next_params().expect("first page");
        assert_eq!(first.continue_token, None);
        assert_eq!(first.limit, Some(2));
        pages.advance(&ListMeta {
            continue_: Some("abc".into()),
            ..ListMeta::default()
        });
        let second = pages.next_params().expect("second page");
        assert_eq!(second.continue_token.as_deref(), Some("abc"));
        pages.advance(&ListMeta {
            continue_: Some(String::new()),
            ..ListMeta::default()
        });
        assert!(pages.next_params().is_none());
    }
}
